//! What a builder ([`ConsumerBuilder`](crate::ConsumerBuilder),
//! [`ProducerBuilder`](crate::ProducerBuilder)) collects before `build`:
//! Kafka properties, and typed settings that apply after them in the order
//! given, so a typed setter wins over a property as a flag wins over `-X`.
//!
//! Properties are read at `build` by the command line's own parser (see
//! `cli::parse_properties`): one set of names, checks and messages.

use crate::error::Result;

/// One typed setting: a change to the builder's draft configuration `D`.
type Typed<D> = Box<dyn FnOnce(&mut D) + Send>;

/// Properties and typed settings, in the order given.
pub(crate) struct Settings<D> {
    properties: Vec<(String, String)>,
    typed: Vec<Typed<D>>,
}

impl<D> Default for Settings<D> {
    fn default() -> Self {
        Self {
            properties: Vec::new(),
            typed: Vec::new(),
        }
    }
}

impl<D> std::fmt::Debug for Settings<D> {
    /// Property names and how many typed settings, never a value (a
    /// property may be a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "properties",
                &self.properties.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("typed", &self.typed.len())
            .finish()
    }
}

impl<D> Settings<D> {
    /// Adds a Kafka property.
    pub(crate) fn property(&mut self, name: String, value: String) {
        self.properties.push((name, value));
    }

    /// Adds a typed setting.
    pub(crate) fn typed(&mut self, f: impl FnOnce(&mut D) + Send + 'static) {
        self.typed.push(Box::new(f));
    }

    /// Applies everything to `draft`: first what `read` makes of the
    /// properties (when there are any), then the typed settings in order.
    pub(crate) fn apply(
        self,
        draft: &mut D,
        read: impl FnOnce(&[(String, String)]) -> Result<Settings<D>>,
    ) -> Result<()> {
        let mut all = match self.properties.is_empty() {
            true => Vec::new(),
            false => read(&self.properties)?.typed,
        };
        all.extend(self.typed);
        for setting in all {
            setting(draft);
        }
        Ok(())
    }
}

/// The methods both builders share: `property`, `properties`, and one
/// typed setter per option, each a closure over the draft type.
macro_rules! builder_methods {
    ($draft:ty; $($(#[$doc:meta])* $name:ident: $ty:ty => |$d:ident, $v:ident| $apply:expr;)*) => {
        /// One Kafka client property by the name Java and librdkafka use
        /// (`bootstrap.servers`, `security.protocol`, `sasl.mechanism`,
        /// `ssl.ca.location`, ...): the same names, checks and messages as
        /// `-X` on the command line, without reading the environment. A
        /// secret may be a reference, `${file:PATH}` or `${env:NAME}`.
        /// Checked by `build`: an unknown name is an error that suggests
        /// the closest known one.
        pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.settings.property(name.into(), value.into());
            self
        }

        /// [`property`](Self::property) for each pair, e.g. the entries of
        /// a client `.properties` file.
        pub fn properties<K: Into<String>, V: Into<String>>(
            mut self,
            pairs: impl IntoIterator<Item = (K, V)>,
        ) -> Self {
            for (k, v) in pairs {
                self.settings.property(k.into(), v.into());
            }
            self
        }

        fn set(mut self, f: impl FnOnce(&mut $draft) + Send + 'static) -> Self {
            self.settings.typed(f);
            self
        }

        $(
            $(#[$doc])*
            pub fn $name(self, value: $ty) -> Self {
                self.set(move |$d: &mut $draft| {
                    let $v = value;
                    $apply;
                })
            }
        )*
    };
}

pub(crate) use builder_methods;

//! Kafka-style configuration: properties files, `-X key=value`, flags and the
//! environment, merged with a documented precedence; secrets held in a
//! redacting type.

pub mod jaas;
pub mod properties;
pub mod secret;
pub mod suggest;

//! The built-in message handlers of the `consumer` binary: `print` writes each
//! message to stdout, `exec` runs a command per message. Both finish a message
//! only once its effect has left the process (rule 3: commit only what is done).

pub mod exec;
mod json;
pub mod print;

pub use exec::ExecHandler;
pub use print::{Format, PrintHandler};

//! The built-in message handlers of the `consumer` binary: `print` writes each
//! message to stdout, `exec` runs a command per message, `pipe` hands
//! messages to long-lived processes of a command. Both finish a message
//! only once its effect has left the process (rule 3: commit only what is done).

pub mod exec;
mod json;
pub mod pipe;
pub mod print;

pub use exec::ExecHandler;
pub use pipe::{PipeConfig, PipeHandler};
pub use print::{Format, PrintHandler};

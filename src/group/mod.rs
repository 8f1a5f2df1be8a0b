//! Consumer groups: the coordinator and committed offsets ([`coordinator`]),
//! and the classic protocol's assignors ([`assignor`]).

pub mod assignor;
pub mod coordinator;

pub use coordinator::{
    GroupClient, GroupConfig, GroupError, STANDALONE_GENERATION, STANDALONE_MEMBER,
};

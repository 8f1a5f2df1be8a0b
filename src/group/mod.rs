//! Consumer groups: the coordinator and committed offsets
//! ([`coordinator`], failing with an [`error::GroupError`]), and group
//! membership under either protocol — the classic one with client-side
//! assignors ([`classic`], [`assignor`], [`consumer_protocol`]) and
//! KIP-848's server-side assignment ([`kip848`]) — behind one
//! [`Membership`] handle that the consumer pipeline drives ([`membership`]).

pub mod assignor;
pub mod classic;
pub mod consumer_protocol;
pub mod coordinator;
pub mod error;
pub mod kip848;
pub mod membership;

pub use coordinator::{
    CommitIdentity, Committed, GroupClient, GroupConfig, STANDALONE_GENERATION, STANDALONE_MEMBER,
};
pub use error::{CommitFailure, GroupError, commit_failure, is_fencing_error};
pub use membership::{GroupEvent, GroupProtocol, MemberStatus, Membership, MembershipConfig};

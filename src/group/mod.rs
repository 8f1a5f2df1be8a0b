//! Consumer groups: the coordinator and committed offsets
//! ([`coordinator`]), and group membership under either protocol — the
//! classic one with client-side assignors ([`classic`], [`assignor`],
//! [`consumer_protocol`]) and
//! KIP-848's server-side assignment ([`kip848`]) — behind one
//! [`Membership`] handle that the consumer pipeline drives ([`membership`]).

pub mod assignor;
pub mod classic;
pub mod consumer_protocol;
pub mod coordinator;
pub mod kip848;
pub mod membership;

pub use coordinator::{
    CommitIdentity, GroupClient, GroupConfig, GroupError, STANDALONE_GENERATION, STANDALONE_MEMBER,
    is_fencing_error,
};
pub use membership::{GroupEvent, GroupProtocol, MemberStatus, Membership, MembershipConfig};

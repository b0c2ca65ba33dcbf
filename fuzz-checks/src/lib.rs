//! The checks labssh's fuzz targets run on untrusted input, one function per target.
//!
//! Each takes arbitrary bytes and panics only when the code under test breaks a
//! property: a parser that panics, accepts what it must refuse, or reads back something
//! other than what it wrote. `fuzz/` (cargo-fuzz, nightly) calls these from libFuzzer;
//! `tests/corpus.rs` replays the committed seeds and a bounded number of mutations of
//! them on stable, which is what CI always runs.
//!
//! | target | input | property |
//! |---|---|---|
//! | `login_name` | an SSH login name | parses only names of the safe alphabet, exactly (`alice+` is the self-service login) |
//! | `proxy_header` | a balancer's first bytes | a bounded PROXY v2 header, or a reason |
//! | `helper_request` | a frame sent to labssh-init | decodes to a request that re-encodes alike |
//! | `helper_answer` | a frame labssh-init sent back | exit statuses and addresses round-trip |
//! | `forwarding_rule` | an allow-list entry | refused, or a rule that judges without panic |
//! | `address_block` | a CIDR or address | refused, or a block containing its own address |
//! | `config` | a role's TOML | loads or names what is wrong, for every role |
//! | `revoked_list` | a revoked-keys file (KRL or key lines) | parsed or refused with a reason |
//! | `ldap_filter` | a login name in an LDAP filter | one assertion, escaped, round-trips |

mod auth;
mod config;
mod helper;
mod names;
mod net;

pub use auth::{ldap_filter, revoked_list};
pub use config::config;
pub use helper::{helper_answer, helper_request};
pub use names::{login_name, proxy_header};
pub use net::{address_block, forwarding_rule};

/// One target's check.
pub type Check = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/` and `fuzz/corpus/` name them.
pub const TARGETS: [(&str, Check); 9] = [
    ("login_name", login_name),
    ("proxy_header", proxy_header),
    ("helper_request", helper_request),
    ("helper_answer", helper_answer),
    ("forwarding_rule", forwarding_rule),
    ("address_block", address_block),
    ("config", config),
    ("revoked_list", revoked_list),
    ("ldap_filter", ldap_filter),
];

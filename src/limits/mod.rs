//! What one client may cost the others: failure windows, token buckets, connection counts and
//! log budgets, keyed by client address or identity. Pure bookkeeping over an injected clock;
//! the HTTP, Socket.IO, session and TURN layers decide what to key them by.
//!
//! Invariants:
//! - memory is bounded: every keyed table has a maximum number of keys and forgets the idle
//!   ones first (an expired window, a full bucket, a count back to zero);
//! - a limit stops the client that went over it, never someone else: keys are a caller's own
//!   address (IPv6 per /64, [`AddrKey`]) or identity, and a valid credential is never refused
//!   because of others' failures (callers check success before they consult a failure window);
//! - no lock is held across an `.await` (parking_lot mutexes, short critical sections).

mod addr;
mod bucket;
mod counts;
mod log_budget;
mod window;

pub use addr::AddrKey;
pub use bucket::{Buckets, Rate, TokenBucket};
pub use counts::{Counted, Counts, Full};
pub use log_budget::LogBudget;
pub use window::FailureWindows;

//! Congestion control on what relais sends, as plain code with no IO and no clock of its own.
//!
//! Each subscriber connection numbers every datagram it sends with the transport-wide sequence
//! number ([`send_log`]); the client's transport-cc feedback (or its REMB) feeds that
//! connection's bandwidth [`estimator`]; each video leg's share of the estimate goes to the
//! leg's publisher, which asks its client (REMB) for no more than its weakest subscriber can
//! take ([`cap`]); while the estimate limits anything, the connection's video leaves through a
//! [`pacer`] at a little more than the estimate. The peer tasks call these (`sfu::peer`): the send log and the estimator live
//! in the subscriber's `Outbound` (written by the publishers' tasks as they forward, read by the
//! subscriber's task when feedback comes), the caps in the publisher's task.

pub mod cap;
pub mod estimator;
pub mod pacer;
pub mod send_log;

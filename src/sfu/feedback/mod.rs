//! The RTCP feedback relais writes itself, as plain code with no IO and no clock of its own:
//! NACKs to publishers for what did not arrive ([`nack`]), transport-wide congestion control
//! feedback so that browsers raise their bitrate ([`twcc`]), and the clocks and counters of
//! sender and receiver reports ([`reports`]).
//!
//! Why not the `rtc` interceptors: each one is a layer every packet is moved through, both
//! ways, whether or not it has anything to do with that packet; the peer task already keeps
//! the per-stream state these need, and calls them only where they matter.

pub mod nack;
pub mod reports;
pub mod twcc;

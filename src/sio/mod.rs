//! The Socket.IO glue under the handlers: the server's emitter for rooms and sockets here
//! and on other nodes ([`io::Io`], which implements the core's [`crate::ports::ClientNotify`]),
//! and what one person or address may hold and send ([`limits::SocketLimits`]).

pub mod io;
pub mod limits;

pub use io::Io;
pub use limits::SocketLimits;

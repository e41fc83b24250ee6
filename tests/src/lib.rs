//! Helpers shared by the end-to-end tests: locating the built binaries, free loopback ports,
//! child processes that are killed when dropped.

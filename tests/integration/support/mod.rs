//! Fixtures shared by the test files, by job. Test files hold tests; what more than one test
//! needs to start, drive or inspect a server lives here.

pub mod api;
pub mod app;
pub mod browser;
pub mod buyers;
pub mod contract;
pub mod db;
pub mod litestream;
pub mod process;
pub mod receiver;
pub mod replica;
pub mod s3;
pub mod spec;
pub mod sse;

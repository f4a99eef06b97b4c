//! Only for tests/prop_actions.rs, until it says `mod common;` like every
//! other test: the one toolkit is tests/common.
#![allow(unused_imports)]

#[path = "../common/mod.rs"]
mod common;

pub use common::{add_run as insert_run, err_text, SCHEMA as HOST_SCHEMA};

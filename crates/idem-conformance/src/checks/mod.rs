//! The case bodies. The public wrappers in `crate::cases` carry the rule of each as its documentation.

mod begin;
mod concurrency;
mod env;
mod fencing;
mod input;
mod lifecycle;
mod responses;
mod sharing;
mod time;

pub(crate) use begin::*;
pub(crate) use concurrency::*;
pub(crate) use fencing::*;
pub(crate) use input::*;
pub(crate) use lifecycle::*;
pub(crate) use responses::*;
pub(crate) use sharing::*;
pub(crate) use time::*;

//! ecs-patchd: patches a self-managed Amazon ECS container instance safely.
//!
//! The cycle ([`cycle`]) drains the instance, patches it through the package manager,
//! reboots when needed and puts it back in service, recording every step in a journal
//! ([`journal`]) so that it survives crashes and reboots. Each side effect sits behind a
//! small trait in its own module. Nothing here prints to the terminal: that is the CLI's.

pub mod agent;
pub mod alarms;
pub mod atomic_file;
pub mod aws;
pub mod check;
pub mod clock;
pub mod command;
pub mod config;
pub mod coordination;
pub mod cycle;
pub mod ec2;
pub mod ecs;
pub mod error;
pub mod fault;
pub mod foreign;
pub mod hooks;
pub mod host;
pub mod http;
pub mod identity;
pub mod journal;
pub mod lifecycle;
pub mod livepatch;
pub mod packages;
pub mod plan;
pub mod report;
pub mod shutdown;
pub mod sim;
pub mod trust;
pub mod window;
pub mod wiring;

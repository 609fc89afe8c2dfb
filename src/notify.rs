//! Notifications on a tenant's channel, made by the backend that runs the statement.
//!
//! A statement that writes a tenant's rows returns the tenant's channel
//! (`wa.tenants.events_channel`) and the payloads, and the notifications are made here rather
//! than by a `pg_notify` inside the statement. On Citus a statement routed to one tenant's
//! shard runs on the node holding it: a `pg_notify` in it would notify that node's listeners,
//! not the coordinator's where the applications listen, and a node that notified cannot
//! prepare its part of a two-phase commit (the delivery fails). Made here, the notifications
//! always come from the session's own backend, and cost no statement.

use pgrx::IntoDatum;
use pgrx::pg_sys;

/// Notifies each of `payloads`, in order, on `channel`, at commit (as `pg_notify`).
pub fn send(channel: &str, payloads: &[String]) {
    for payload in payloads {
        one(channel, payload);
    }
}

/// Notifies each payload on the channel beside it, in order.
pub fn send_each(channels: &[String], payloads: &[String]) {
    for (channel, payload) in channels.iter().zip(payloads) {
        one(channel, payload);
    }
}

fn one(channel: &str, payload: &str) {
    // SAFETY: pg_notify takes two non-null text arguments, as given, and returns void.
    unsafe {
        pgrx::direct_function_call_as_datum(
            pg_sys::pg_notify,
            &[channel.into_datum(), payload.into_datum()],
        );
    }
}

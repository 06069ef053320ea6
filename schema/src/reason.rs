//! Reason classes for failures, deferrals and rejections.
//!
//! Operators ask "why does mail fail?" in a few dozen words, not in the
//! thousands of texts remote servers send. The processor's classifier maps
//! every failure, deferral and rejection to one [`ReasonClass`].

use serde::{Deserialize, Serialize};

/// Why a delivery attempt or an SMTP command did not succeed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ReasonClass {
    /// The recipient does not exist (`550 5.1.1`, `Unknown user`).
    UnknownRecipient,
    /// The recipient's mailbox is full or over quota.
    MailboxFull,
    /// The message is larger than the receiver accepts.
    MessageTooLarge,
    /// The content was refused as spam, a virus or by a content policy.
    SpamContent,
    /// A policy refusal: blocklists, sender or HELO policy, DMARC/SPF.
    PolicyBlocklist,
    /// Greylisting: try again later.
    Greylisting,
    /// Too many messages, connections or recipients: rate limiting.
    RateLimit,
    /// Authentication failed, or relaying was denied.
    AuthRelayDenied,
    /// The destination could not be resolved or routed.
    DnsFailure,
    /// No connection could be made: refused, or no route to the host.
    ConnectionRefused,
    /// A timeout, or the connection was dropped mid-session.
    Timeout,
    /// TLS negotiation or certificate verification failed.
    TlsFailure,
    /// Any other error reported by the remote server.
    RemoteError,
    /// A local delivery (file, pipe, mailbox) failed.
    LocalDeliveryError,
    /// The retry time for the address ran out.
    ExpiredRetry,
    /// No delivery was tried: every host (or the address) is still waiting
    /// for its retry time after earlier failures.
    RetryNotReached,
    /// Not tried on purpose: queued by configuration or an option (`-odqs`,
    /// `queue_smtp_domains`, `control=queue`) or held back by a local
    /// concurrency or connection limit.
    Queued,
    /// The client broke the SMTP protocol: syntax and synchronization errors,
    /// too many non-mail commands.
    ProtocolError,
    /// An administrator or a filter cancelled the delivery.
    Cancelled,
    /// Nothing else fits.
    Other,
}

impl ReasonClass {
    /// Every class, in the order reports list them.
    pub const ALL: [ReasonClass; 20] = [
        ReasonClass::UnknownRecipient,
        ReasonClass::MailboxFull,
        ReasonClass::MessageTooLarge,
        ReasonClass::SpamContent,
        ReasonClass::PolicyBlocklist,
        ReasonClass::Greylisting,
        ReasonClass::RateLimit,
        ReasonClass::AuthRelayDenied,
        ReasonClass::DnsFailure,
        ReasonClass::ConnectionRefused,
        ReasonClass::Timeout,
        ReasonClass::TlsFailure,
        ReasonClass::RemoteError,
        ReasonClass::LocalDeliveryError,
        ReasonClass::ExpiredRetry,
        ReasonClass::RetryNotReached,
        ReasonClass::Queued,
        ReasonClass::ProtocolError,
        ReasonClass::Cancelled,
        ReasonClass::Other,
    ];

    /// The class's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonClass::UnknownRecipient => "unknown_recipient",
            ReasonClass::MailboxFull => "mailbox_full",
            ReasonClass::MessageTooLarge => "message_too_large",
            ReasonClass::SpamContent => "spam_content",
            ReasonClass::PolicyBlocklist => "policy_blocklist",
            ReasonClass::Greylisting => "greylisting",
            ReasonClass::RateLimit => "rate_limit",
            ReasonClass::AuthRelayDenied => "auth_relay_denied",
            ReasonClass::DnsFailure => "dns_failure",
            ReasonClass::ConnectionRefused => "connection_refused",
            ReasonClass::Timeout => "timeout",
            ReasonClass::TlsFailure => "tls_failure",
            ReasonClass::RemoteError => "remote_error",
            ReasonClass::LocalDeliveryError => "local_delivery_error",
            ReasonClass::ExpiredRetry => "expired_retry",
            ReasonClass::RetryNotReached => "retry_not_reached",
            ReasonClass::Queued => "queued",
            ReasonClass::ProtocolError => "protocol_error",
            ReasonClass::Cancelled => "cancelled",
            ReasonClass::Other => "other",
        }
    }
}

impl std::str::FromStr for ReasonClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReasonClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown reason class {s:?}"))
    }
}

impl std::fmt::Display for ReasonClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for class in ReasonClass::ALL {
            assert_eq!(class.as_str().parse::<ReasonClass>(), Ok(class));
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
        }
    }
}

//! The one admission path of device reports, whatever carries them (CoAP over UDP, HTTP, and
//! later DTLS and MQTT): authenticate the credential against the registry, decode the payload,
//! resolve and check each record's device, and hand back the accepted records as a [`Batch`]
//! for [`Hub::commit`](super::Hub::commit) with the refused ones and why. Nothing here
//! touches the log or the state.

use super::Hub;
use super::payload::{self, BatchError, Format, Report};
use super::registry::{AuthError, Principal};
use super::wal::{Record, ReportRec};

/// Records accepted for the log, opaque outside the live room: made by [`Hub::admit`],
/// consumed by [`Hub::commit`](super::Hub::commit).
#[derive(Debug, Default)]
pub struct Batch {
    pub(super) records: Vec<Record>,
}

impl Batch {
    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Adds another batch's records after this one's (a transport that gathers the
    /// datagrams of one turn commits them as one group).
    pub fn append(&mut self, other: Batch) {
        self.records.extend(other.records);
    }
}

/// A record of a payload that was refused while the others were accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Its place in the payload (from 0).
    pub record: usize,
    /// Why, for a person.
    pub error: String,
}

/// The outcome of admitting a payload.
#[derive(Debug)]
pub struct Admission {
    /// Who sent it.
    pub principal: Principal,
    /// The accepted records.
    pub accepted: Batch,
    /// The refused records.
    pub rejected: Vec<Rejected>,
}

/// Why a whole payload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdmitError {
    /// No credential was sent.
    #[error(
        "no credential: send an ingest key or a device secret (CoAP: ?k=; HTTP: `Authorization: Bearer ...` or ?key=)"
    )]
    MissingCredential,
    /// The credential is not a registered ingest key or device secret (of the device named).
    #[error("the ingest key or device secret is not registered (or not this device's)")]
    BadCredential,
    /// The request is addressed to a device that is not registered.
    #[error("unknown device {0}")]
    UnknownDevice(String),
    /// More records than one payload may hold.
    #[error("{records} records; send at most {max} per payload")]
    TooLarge {
        /// Records in the payload.
        records: usize,
        /// The limit.
        max: usize,
    },
    /// The payload cannot be decoded; the message names the problem and the record.
    #[error("{0}")]
    Malformed(String),
}

impl AdmitError {
    /// The outcome it counts as ([`super::LiveObserver::ingest`]): `malformed` for a payload
    /// that cannot be read or is too large, `refused` for a credential or device refused.
    pub fn outcome(&self) -> &'static str {
        match self {
            AdmitError::Malformed(_) | AdmitError::TooLarge { .. } => "malformed",
            _ => "refused",
        }
    }
}

impl From<AuthError> for AdmitError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::UnknownDevice(d) => AdmitError::UnknownDevice(d),
            AuthError::Missing => AdmitError::MissingCredential,
            AuthError::Unknown => AdmitError::BadCredential,
        }
    }
}

impl Hub {
    /// Admits a payload of `format` received at `now` (seconds since the epoch) with
    /// `credential` (a device secret or an ingest key), addressed to `device` when the
    /// transport names one (CoAP's `/r/{id}`), else naming its devices itself (SenML base
    /// names, compact JSON's `"device"`) or being one device's own reports. A compact JSON
    /// batch is admitted record by record; a SenML pack whole.
    pub fn admit(
        &self,
        credential: Option<&str>,
        device: Option<&str>,
        format: Format,
        bytes: &[u8],
        now: f64,
    ) -> Result<Admission, AdmitError> {
        let reg = self.registry();
        let principal = reg.authenticate(credential.unwrap_or(""), device)?;
        self.admit_as(&reg, principal, device, format, bytes, now, false)
    }

    /// Admits a payload from a device authenticated by its transport (a DTLS session whose
    /// pre-shared key identity is `identity`), addressed to `device`, which must be it.
    pub fn admit_session(
        &self,
        identity: &str,
        device: &str,
        format: Format,
        bytes: &[u8],
        now: f64,
    ) -> Result<Admission, AdmitError> {
        let reg = self.registry();
        if !reg.has_device(device) {
            return Err(AdmitError::UnknownDevice(device.to_string()));
        }
        if identity != device {
            return Err(AdmitError::BadCredential);
        }
        let principal = Principal::Device(identity.to_string());
        self.admit_as(&reg, principal, Some(device), format, bytes, now, true)
    }

    /// True if `device` must report over DTLS: it was registered with a DTLS key, its layer
    /// takes DTLS only, or the server takes CoAP over DTLS only.
    pub fn requires_dtls(&self, device: &str) -> bool {
        self.cfg.dtls_only || self.registry().dtls_required(device)
    }

    /// The DTLS pre-shared key of the device whose PSK identity is `identity`.
    pub fn dtls_psk(&self, identity: &str) -> Option<Vec<u8>> {
        self.registry()
            .dtls_psk(identity)
            .map(|k| k.as_bytes().to_vec())
    }

    /// Admits for `principal`; `secure` when the transport authenticated it (DTLS): devices
    /// that must report over DTLS are refused otherwise, whatever carried the report.
    #[allow(clippy::too_many_arguments)]
    fn admit_as(
        &self,
        reg: &super::registry::RegIndex,
        principal: Principal,
        device: Option<&str>,
        format: Format,
        bytes: &[u8],
        now: f64,
        secure: bool,
    ) -> Result<Admission, AdmitError> {
        let parsed = payload::parse_batch(format, bytes, now).map_err(|e| match e {
            BatchError::TooMany { records } => AdmitError::TooLarge {
                records,
                max: payload::MAX_RECORDS,
            },
            BatchError::Malformed(e) => AdmitError::Malformed(e.0),
        })?;
        let mut records = Vec::with_capacity(parsed.len());
        let mut rejected = Vec::new();
        for (i, r) in parsed.into_iter().enumerate() {
            let refuse = |error: String| Rejected { record: i, error };
            let mut r = match r {
                Ok(r) => r,
                Err(e) => {
                    rejected.push(refuse(e.0));
                    continue;
                }
            };
            // A transport that addresses a device (CoAP's path) decides whose records these
            // are; names inside the payload (a SenML base name such as an IMEI URN) are the
            // device's own business then.
            let in_payload = r.device.take();
            let named = device.or(in_payload.as_deref());
            let id = match (named, &principal) {
                (Some(d), Principal::Device(own)) if d != own => {
                    rejected.push(refuse(format!(
                        "this device secret belongs to {own}, not {d}"
                    )));
                    continue;
                }
                (Some(d), _) => d,
                (None, Principal::Device(own)) => own.as_str(),
                (None, Principal::Ingest(_)) => {
                    rejected.push(refuse(
                        "no device named: give \"device\" (or a SenML base name)".into(),
                    ));
                    continue;
                }
            };
            // The addressed device was checked by `authenticate`.
            if Some(id) != device && !reg.has_device(id) {
                rejected.push(refuse(format!("unknown device {id}")));
                continue;
            }
            if !secure && (self.cfg.dtls_only || reg.dtls_required(id)) {
                rejected.push(refuse(format!(
                    "{id} reports over DTLS only (coaps://HOST:5684/r/{id})"
                )));
                continue;
            }
            records.push(report_record(id, r, now));
        }
        Ok(Admission {
            principal,
            accepted: Batch { records },
            rejected,
        })
    }
}

/// A report record for a device, received at `recv_s`.
fn report_record(device: &str, r: Report, recv_s: f64) -> Record {
    Record::Report(ReportRec {
        recv_ms: (recv_s * 1000.0) as i64,
        t: r.t,
        pos: r.position,
        late: false,
        device: device.to_string(),
        telemetry: r.telemetry,
    })
}

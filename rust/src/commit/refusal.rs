//! Why a request was refused, and the gRPC status code each refusal travels with: the one table
//! of that rule. The stream encoder writes a refused transaction's code from it
//! ([`super::stream`]); the Python face raises each refusal as its exception class
//! and exports the table as `_core.ERROR_CODES` (exception class, code number), which the server
//! reads for every error it answers, in-process or on the wire.

use crate::commit::SubmitError;
use crate::hlc::ClockError;

/// The gRPC status codes the oracle answers with, by number (`grpc.StatusCode` in Python).
pub mod code {
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const ALREADY_EXISTS: u32 = 6;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const OUT_OF_RANGE: u32 = 11;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
}

/// A kind of refusal. Each is one exception class in Python (`Refusal::ALL` lists them most
/// specific first, the order in which a subclass must be matched before its base).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// More keys, or longer keys, than the limits (`TransactionTooLargeError`).
    TooLarge,
    /// A start timestamp in the future, or at or below forgotten decisions (`StartTimestampError`).
    StartTimestamp,
    /// An id already submitted with other contents (`TransactionMismatchError`).
    Mismatch,
    /// A malformed transaction: a bad id, an empty write set (`InvalidTransactionError`).
    InvalidTransaction,
    /// The group-commit queue is full (`SchedulerOverloadedError`).
    Overloaded,
    /// The scheduler is closed or not started (`SchedulerClosedError`).
    Closed,
    /// A timestamp would pass the clock's ceiling (`CeilingReachedError`).
    CeilingReached,
    /// The decision write failed or its outcome is unknown (`CommitOutcomeUnknownError`).
    OutcomeUnknown,
    /// The log cannot be written or used (`CommitLogError`).
    Log,
    /// A bad argument of the in-process API (`TypeError`, `ValueError`).
    BadArgument,
    /// Anything else the oracle raises (`HlcError`: a clock that cannot go on).
    Internal,
}

impl Refusal {
    /// Every kind, most specific first.
    pub const ALL: [Refusal; 11] = [
        Refusal::TooLarge,
        Refusal::StartTimestamp,
        Refusal::Mismatch,
        Refusal::InvalidTransaction,
        Refusal::Overloaded,
        Refusal::Closed,
        Refusal::CeilingReached,
        Refusal::OutcomeUnknown,
        Refusal::Log,
        Refusal::BadArgument,
        Refusal::Internal,
    ];

    /// The gRPC status code this refusal is answered with.
    pub fn code(self) -> u32 {
        match self {
            Refusal::InvalidTransaction | Refusal::BadArgument => code::INVALID_ARGUMENT,
            Refusal::TooLarge | Refusal::Overloaded => code::RESOURCE_EXHAUSTED,
            Refusal::StartTimestamp => code::OUT_OF_RANGE,
            Refusal::Mismatch => code::ALREADY_EXISTS,
            Refusal::Closed | Refusal::CeilingReached | Refusal::OutcomeUnknown | Refusal::Log => {
                code::UNAVAILABLE
            }
            Refusal::Internal => code::INTERNAL,
        }
    }
}

impl SubmitError {
    /// What kind of refusal this is.
    pub fn refusal(&self) -> Refusal {
        match self {
            SubmitError::InvalidTxnId | SubmitError::EmptyWriteSet { .. } => {
                Refusal::InvalidTransaction
            }
            SubmitError::TooManyKeys { .. } | SubmitError::KeyTooLarge { .. } => Refusal::TooLarge,
            SubmitError::StartInFuture { .. } | SubmitError::StartTooOld { .. } => {
                Refusal::StartTimestamp
            }
            SubmitError::Mismatch { .. } => Refusal::Mismatch,
            SubmitError::Clock(ClockError::CeilingReached { .. }) => Refusal::CeilingReached,
            SubmitError::Clock(_) => Refusal::Internal,
            SubmitError::Log(_) => Refusal::Log,
            SubmitError::OutcomeUnknown(_) => Refusal::OutcomeUnknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_code() {
        let codes: Vec<u32> = Refusal::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes, vec![8, 11, 6, 3, 8, 14, 14, 14, 14, 3, 13]);
    }

    #[test]
    fn submit_errors_map_to_their_refusal() {
        let ceiling = SubmitError::Clock(ClockError::CeilingReached {
            needed_physical: 2,
            ceiling_physical: 1,
        });
        assert_eq!(ceiling.refusal(), Refusal::CeilingReached);
        assert_eq!(
            SubmitError::Clock(ClockError::Exhausted).refusal(),
            Refusal::Internal
        );
        assert_eq!(SubmitError::InvalidTxnId.refusal().code(), 3);
        assert_eq!(
            SubmitError::OutcomeUnknown(String::new()).refusal().code(),
            code::UNAVAILABLE
        );
    }
}

//! Errors as gRPC statuses, in one place: every Flight service of Strata (Flight SQL, the
//! speed layer's states) answers a failure through [`status`].

use datafusion::error::DataFusionError;
use tonic::Status;

use crate::error::{Error, ErrorDomain, datafusion_domain};

/// A Strata error as a gRPC status: the user's mistakes are `INVALID_ARGUMENT`; systems
/// outside Strata, other processes holding what a call needs and a commit that lost a race
/// (all worth a retry) `UNAVAILABLE`; bugs `INTERNAL`.
pub fn status(e: &Error) -> Status {
    let message = || e.to_string();
    match e {
        Error::DataFusion(df) => df_status(df),
        Error::Config { .. } | Error::View { .. } | Error::Input(_) | Error::Arrow(_) => {
            Status::invalid_argument(message())
        }
        Error::Lake { .. }
        | Error::Io { .. }
        | Error::Busy(_)
        | Error::Conflict(_)
        | Error::Kafka { .. }
        | Error::Speed { .. } => Status::unavailable(message()),
        Error::Internal(_) => Status::internal(message()),
    }
}

/// A DataFusion error as a gRPC status: planning mistakes are the client's; a query over
/// its memory is `RESOURCE_EXHAUSTED`; a Strata error inside is mapped as itself.
pub fn df_status(e: &DataFusionError) -> Status {
    if let DataFusionError::ResourcesExhausted(why) = e.find_root() {
        return Status::resource_exhausted(format!(
            "the query needs more memory than the server gives queries (serve.query_memory): {why}"
        ));
    }
    if let DataFusionError::External(inner) = e
        && let Some(strata) = inner.downcast_ref::<Error>()
    {
        return status(strata);
    }
    if let DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) = e
        && matches!(inner.as_ref(), DataFusionError::External(_))
    {
        return df_status(inner);
    }
    let message = without_backtrace(e);
    match datafusion_domain(e) {
        ErrorDomain::User => Status::invalid_argument(message),
        ErrorDomain::External => Status::unavailable(message),
        ErrorDomain::Internal => Status::internal(message),
    }
}

/// A DataFusion error's message, without the backtrace some builds append.
fn without_backtrace(e: &DataFusionError) -> String {
    e.to_string()
        .split("\nbacktrace")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn each_error_gets_the_status_of_whose_fault_it_is() {
        let cases = [
            (Error::Input("bad".into()), Code::InvalidArgument),
            (Error::view("v", "GROUP BY", "no window"), Code::InvalidArgument),
            (Error::Busy("the lease".into()), Code::Unavailable),
            (Error::Conflict("raced".into()), Code::Unavailable),
            (Error::kafka("fetch", "broker down"), Code::Unavailable),
            (Error::Internal("oops".into()), Code::Internal),
            (
                Error::DataFusion(DataFusionError::Plan("no column x".into())),
                Code::InvalidArgument,
            ),
            (
                Error::DataFusion(DataFusionError::ResourcesExhausted("pool".into())),
                Code::ResourceExhausted,
            ),
            (
                Error::DataFusion(DataFusionError::External(Box::new(Error::Busy("x".into())))),
                Code::Unavailable,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(status(&e).code(), code, "{e}");
        }
    }
}

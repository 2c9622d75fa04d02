//! The one error type of `strata-core`.
//!
//! Every variant knows whose fault it is ([`ErrorDomain`]): the user's (bad config, bad view,
//! bad SQL, bad input), an external system's (the lake's object store, Kafka), or ours (a
//! bug). Front ends map the domain to an exit code or a `tonic::Status` in one place.

use std::path::PathBuf;

use datafusion::error::DataFusionError;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDomain {
    /// The user can fix it: config, view definitions, SQL, input files.
    User,
    /// A system outside Strata failed: the object store, the network, Kafka.
    External,
    /// A bug in Strata.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file cannot be read or parsed, or a key has a wrong value.
    #[error("{file}: {key}: {message}", file = file.display())]
    Config {
        file: PathBuf,
        /// Dotted path of the offending key, e.g. `sources[0].schema.amount`.
        key: String,
        message: String,
    },

    /// A view definition the engine cannot maintain incrementally, or that does not plan.
    #[error("view `{view}`: {part}: {message}")]
    View {
        view: String,
        /// The part of the SQL at fault, e.g. `GROUP BY`, `count(DISTINCT user_id)`.
        part: String,
        message: String,
    },

    /// A user's input could not be used (a file to import, a time range, an argument).
    #[error("{0}")]
    Input(String),

    /// The lake (Delta log, object store) failed or holds something unexpected.
    #[error("lake: {context}: {source}")]
    Lake {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A commit to the lake lost to another writer's that touched what it depends on (a
    /// Kafka partition's position or owner): read the table again and decide anew.
    #[error("lake: a concurrent commit won: {0}")]
    Conflict(String),

    /// Another process holds what this needs (the lake's batch lease): nobody's mistake;
    /// try again once it is done.
    #[error("{0}")]
    Busy(String),

    /// Kafka (the broker or the client) failed.
    #[error("Kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A speed layer could not be asked for its states (not reachable, stopped, too slow).
    #[error("speed layer {endpoint}: {message}")]
    Speed { endpoint: String, message: String },

    #[error(transparent)]
    DataFusion(#[from] DataFusionError),

    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),

    /// A broken invariant: a bug in Strata.
    #[error("internal error (a bug in Strata, please report it): {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Error::Config { .. } | Error::View { .. } | Error::Input(_) => ErrorDomain::User,
            Error::Lake { .. }
            | Error::Io { .. }
            | Error::Conflict(_)
            | Error::Busy(_)
            | Error::Kafka { .. }
            | Error::Speed { .. } => ErrorDomain::External,
            Error::DataFusion(e) => datafusion_domain(e),
            Error::Arrow(_) => ErrorDomain::User,
            Error::Internal(_) => ErrorDomain::Internal,
        }
    }

    pub fn config(file: impl Into<PathBuf>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.into(),
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn view(view: impl Into<String>, part: impl Into<String>, message: impl Into<String>) -> Self {
        Error::View {
            view: view.into(),
            part: part.into(),
            message: message.into(),
        }
    }

    pub fn lake(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Lake {
            context: context.into(),
            source: source.into(),
        }
    }

    pub fn kafka(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Kafka {
            context: context.into(),
            source: source.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// DataFusion errors cover planning mistakes (the user's), I/O (external) and bugs.
pub fn datafusion_domain(e: &DataFusionError) -> ErrorDomain {
    match e {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::ResourcesExhausted(_)
        | DataFusionError::Execution(_) => ErrorDomain::User,
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) | DataFusionError::ParquetError(_) => {
            ErrorDomain::External
        }
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => datafusion_domain(inner),
        DataFusionError::Shared(inner) => datafusion_domain(inner),
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(e) => e.domain(),
            None => ErrorDomain::External,
        },
        DataFusionError::Internal(_) => ErrorDomain::Internal,
        _ => ErrorDomain::Internal,
    }
}

impl From<deltalake::DeltaTableError> for Error {
    fn from(e: deltalake::DeltaTableError) -> Self {
        Error::lake("delta", e)
    }
}

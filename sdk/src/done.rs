//! What a worker's `run` returns in its `Ok`: an exit code alone, or a result with it.
//!
//! ```no_run
//! # use http_spawn_sdk::{Ctx, Json};
//! // An exit code, as before: 0 is success.
//! async fn plain(_ctx: Ctx) -> Result<i32, String> { Ok(0) }
//!
//! // A result: any `serde::Serialize` value, kept by the host as JSON with the task's end
//! // (exit code 0).
//! async fn sum(_ctx: Ctx) -> Result<Json<[u32; 2]>, String> { Ok(Json([40, 2])) }
//! ```

use alloc::string::String;

use crate::bindings::http_spawn::worker::types::Done;

/// A value a worker's `run` may return in its `Ok`.
pub trait Return {
    /// How the task finishes.
    fn done(self) -> Result<Done, String>;
}

/// The exit code, with no result: 0 is success.
impl Return for i32 {
    fn done(self) -> Result<Done, String> {
        Ok(Done {
            exit_code: self,
            result: None,
        })
    }
}

/// Exit code 0, with no result.
impl Return for () {
    fn done(self) -> Result<Done, String> {
        0.done()
    }
}

/// As it is: an exit code and, if any, a result already written as JSON text (which the host
/// checks).
impl Return for Done {
    fn done(self) -> Result<Done, String> {
        Ok(self)
    }
}

/// A result, `T` written as JSON, with exit code 0. A value that cannot be written as JSON
/// (a map with keys that are not strings, say) fails the task with serde's message.
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

#[cfg(feature = "json")]
impl<T: serde::Serialize> Return for Json<T> {
    fn done(self) -> Result<Done, String> {
        use alloc::string::ToString;
        let result = serde_json::to_string(&self.0).map_err(|error| error.to_string())?;
        Ok(Done {
            exit_code: 0,
            result: Some(result),
        })
    }
}

//! Injected API failures for tests: the next matching requests get a
//! Kubernetes `Status` error with the chosen code instead of an answer.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// One rule: requests whose method and path match fail with `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The HTTP method (`POST`, `GET`, ...); any when `None`.
    #[serde(default)]
    pub method: Option<String>,
    /// A substring of the path (`/pods`, `/namespaces/pool-`); any when empty.
    #[serde(default)]
    pub path_contains: String,
    /// The HTTP code to answer (500, 503, 403, 429, ...).
    pub code: u16,
    /// How many requests fail; every matching one when `None`.
    #[serde(default)]
    pub times: Option<u32>,
}

impl Fault {
    /// `code` on `method` requests whose path contains `path`, `times` times.
    pub fn new(method: &str, path: &str, code: u16, times: Option<u32>) -> Self {
        Self {
            method: Some(method.to_string()),
            path_contains: path.to_string(),
            code,
            times,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self
            .method
            .as_deref()
            .map_or(true, |m| m.eq_ignore_ascii_case(method));
        method_ok && path.contains(&self.path_contains)
    }
}

/// The first rule matching the request, used up by one; its error.
pub fn take(faults: &mut Vec<Fault>, method: &str, path: &str) -> Option<ApiError> {
    let i = faults.iter().position(|f| f.matches(method, path))?;
    let code = faults[i].code;
    if let Some(times) = faults[i].times.as_mut() {
        *times = times.saturating_sub(1);
        if *times == 0 {
            faults.remove(i);
        }
    }
    Some(ApiError::injected(code, method, path))
}

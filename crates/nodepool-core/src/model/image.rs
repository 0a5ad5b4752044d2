//! Image builds and uploads.
use serde::{Deserialize, Serialize};

/// The state of an image build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildState {
    /// Being built.
    Building,
    /// Built and usable.
    Ready,
    /// Being deleted.
    Deleting,
    /// Failed.
    Failed,
}

/// The state of an image upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UploadState {
    /// Being uploaded.
    Uploading,
    /// Uploaded and usable.
    Ready,
    /// Being deleted.
    Deleting,
    /// Failed.
    Failed,
}

/// One build of a diskimage.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageBuild {
    /// Build id.
    #[serde(skip)]
    pub id: String,
    /// State.
    pub state: Option<BuildState>,
    /// Time of the last state change.
    pub state_time: Option<f64>,
}

/// One upload of a build to a provider.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageUpload {
    /// Upload id (sequence).
    #[serde(skip)]
    pub id: String,
    /// State.
    pub state: Option<UploadState>,
    /// Time of the last state change.
    pub state_time: Option<f64>,
    /// The cloud's image id.
    pub external_id: Option<String>,
}

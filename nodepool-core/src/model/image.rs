//! Image builds (`/nodepool/images/<image>/builds/<build>`) and uploads
//! (`.../builds/<build>/providers/<provider>/images/<upload>`).
use super::decode::Fields;
use super::json::{JsonObject, JsonValue, JsonWriter};
use super::{state_enum, write_time, ModelError, WireForm};

state_enum! {
    /// The state of an image build.
    BuildState ("build") {
        /// Being built.
        Building => "building",
        /// Built and usable.
        Ready => "ready",
        /// Being deleted.
        Deleting => "deleting",
        /// Failed.
        Failed => "failed",
    }
}

state_enum! {
    /// The state of an image upload.
    UploadState ("upload") {
        /// Being uploaded.
        Uploading => "uploading",
        /// Uploaded, waiting for its validation (ours: a diskimage with
        /// `validation`). Written as upstream's `uploading` with
        /// `"validation": {"result": "pending"}`: upstream's code refuses
        /// any other state name, and its launchers boot only `ready`.
        Testing => "testing",
        /// Uploaded and usable.
        Ready => "ready",
        /// Being deleted.
        Deleting => "deleting",
        /// Failed.
        Failed => "failed",
    }
}

const BUILD_KNOWN: &[&str] = &[
    "state",
    "state_time",
    "builder",
    "builder_id",
    "formats",
    "username",
    "python_path",
    "shell_type",
];

/// One build of a diskimage. `ImageBuild::default()` is upstream's
/// `ImageBuild()`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageBuild {
    /// Build id (the znode name), not serialized.
    pub id: String,
    /// The image's name (from the path), not serialized.
    pub image_name: String,
    /// State.
    pub state: Option<BuildState>,
    /// Time of the last state change.
    pub state_time: Option<f64>,
    /// Hostname of the builder (written only when set).
    pub builder: Option<String>,
    /// Unique id of the builder (written only when set).
    pub builder_id: Option<String>,
    /// Image formats built ("qcow2", "raw", ...), written sorted and joined
    /// by commas, and only when there are any.
    pub formats: Vec<String>,
    /// Login user of nodes booted from it (read default "zuul").
    pub username: Option<String>,
    /// Python interpreter (read default "/usr/bin/python2").
    pub python_path: Option<String>,
    /// Shell type.
    pub shell_type: Option<String>,
    /// Keys we do not know, written back after the known ones.
    pub extra: JsonObject,
    /// How values were written where our types cannot say it.
    pub wire: WireForm,
}

impl ImageBuild {
    /// A new build of `image_name` in `state`, stamped now.
    pub fn new(image_name: impl Into<String>, state: BuildState) -> Self {
        let mut build = Self {
            image_name: image_name.into(),
            ..Self::default()
        };
        build.set_state(state);
        build
    }

    /// Change the state and set `state_time` to now.
    pub fn set_state(&mut self, state: BuildState) {
        self.state = Some(state);
        self.state_time = Some(super::now());
    }

    /// The bytes upstream would write for this build, followed by the
    /// [`extra`](Self::extra) keys.
    pub fn to_json(&self) -> Vec<u8> {
        let mut w = JsonWriter::new();
        w.opt_str("state", self.state.map(BuildState::as_str));
        write_time(&mut w, &self.wire, "state_time", self.state_time);
        if let Some(builder) = &self.builder {
            w.opt_str("builder", Some(builder));
        }
        if let Some(builder_id) = &self.builder_id {
            w.opt_str("builder_id", Some(builder_id));
        }
        if !self.formats.is_empty() {
            let mut formats = self.formats.clone();
            formats.sort();
            w.opt_str("formats", Some(&formats.join(",")));
        }
        w.opt_str("username", self.username.as_deref())
            .opt_str("python_path", self.python_path.as_deref())
            .opt_str("shell_type", self.shell_type.as_deref())
            .extra(&self.extra);
        w.finish()
    }

    /// Decode a build; `image_name` stays empty (see
    /// [`from_json_at`](Self::from_json_at)).
    pub fn from_json(id: &str, data: &[u8]) -> Result<Self, ModelError> {
        Self::from_json_at("", id, data)
    }

    /// Decode the build `id` of `image_name`, with upstream's defaults.
    pub fn from_json_at(image_name: &str, id: &str, data: &[u8]) -> Result<Self, ModelError> {
        let f = Fields::parse("image build", id, data)?;
        let mut wire = WireForm::default();
        let (state, state_time) = f.state_and_time("a build state", &mut wire)?;
        // Upstream splits a non-empty string; anything else falsy is none.
        let formats = match f.get("formats") {
            Some(JsonValue::String(s)) if !s.is_empty() => {
                s.split(',').map(str::to_owned).collect()
            }
            Some(v) if v.is_truthy() => return Err(f.wrong("formats", "a string", v)),
            _ => Vec::new(),
        };
        Ok(Self {
            id: id.to_owned(),
            image_name: image_name.to_owned(),
            state,
            state_time,
            builder: f.opt_str("builder")?,
            builder_id: f.opt_str("builder_id")?,
            formats,
            username: f.str_or("username", "zuul")?,
            python_path: f.str_or("python_path", "/usr/bin/python2")?,
            shell_type: f.opt_str("shell_type")?,
            extra: f.extra(BUILD_KNOWN),
            wire,
        })
    }
}

const UPLOAD_KNOWN: &[&str] = &[
    "state",
    "state_time",
    "external_id",
    "external_name",
    "format",
    "username",
    "python_path",
    "shell_type",
];

/// The key of an upload's validation outcome in its JSON.
pub const VALIDATION_KEY: &str = "validation";
/// [`Validation::result`] of an upload that passed.
pub const VALIDATION_PASSED: &str = "passed";
/// [`Validation::result`] of an upload that was rejected.
pub const VALIDATION_FAILED: &str = "failed";
/// [`Validation::result`] of an upload waiting for its validation: with
/// the state `uploading` on the wire, it is our [`UploadState::Testing`].
pub const VALIDATION_PENDING: &str = "pending";

/// How an upload's validation ended (see doc/images.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validation {
    /// [`VALIDATION_PASSED`] or [`VALIDATION_FAILED`].
    pub result: String,
    /// The file holding the hook's output.
    pub log: Option<String>,
    /// Why it failed, in a line.
    pub reason: Option<String>,
}

/// One upload of a build to a provider. `ImageUpload::default()` is
/// upstream's `ImageUpload()`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageUpload {
    /// Upload id (ten-digit sequence, the znode name), not serialized.
    pub id: String,
    /// The build it is an upload of (from the path), not serialized.
    pub build_id: String,
    /// The provider it was uploaded to (from the path), not serialized.
    pub provider_name: String,
    /// The image's name (from the path), not serialized.
    pub image_name: String,
    /// State.
    pub state: Option<UploadState>,
    /// Time of the last state change.
    pub state_time: Option<f64>,
    /// The cloud's image id.
    pub external_id: Option<String>,
    /// The cloud's image name.
    pub external_name: Option<String>,
    /// The format uploaded.
    pub format: Option<String>,
    /// Login user of nodes booted from it (read default "zuul").
    pub username: Option<String>,
    /// Python interpreter (read default "/usr/bin/python2").
    pub python_path: Option<String>,
    /// Shell type.
    pub shell_type: Option<String>,
    /// Keys we do not know, written back after the known ones.
    pub extra: JsonObject,
    /// How values were written where our types cannot say it.
    pub wire: WireForm,
}

impl ImageUpload {
    /// A new upload of build `build_id` of `image_name` to `provider_name`,
    /// in `state`, stamped now.
    pub fn new(
        image_name: impl Into<String>,
        build_id: impl Into<String>,
        provider_name: impl Into<String>,
        state: UploadState,
    ) -> Self {
        let mut upload = Self {
            image_name: image_name.into(),
            build_id: build_id.into(),
            provider_name: provider_name.into(),
            ..Self::default()
        };
        upload.set_state(state);
        upload
    }

    /// Change the state and set `state_time` to now.
    pub fn set_state(&mut self, state: UploadState) {
        self.state = Some(state);
        self.state_time = Some(super::now());
    }

    /// The outcome of this upload's validation (ours, kept under the
    /// `validation` key, which upstream ignores).
    pub fn validation(&self) -> Option<Validation> {
        let v = self.extra.get(VALIDATION_KEY)?.as_object()?;
        let text = |k: &str| v.get(k).and_then(JsonValue::as_str).map(str::to_string);
        Some(Validation {
            result: text("result").unwrap_or_default(),
            log: text("log"),
            reason: text("reason"),
        })
    }

    /// Record the outcome of this upload's validation.
    pub fn set_validation(&mut self, validation: &Validation) {
        let mut v = JsonObject::new();
        v.insert("result", JsonValue::String(validation.result.clone()));
        if let Some(log) = &validation.log {
            v.insert("log", JsonValue::String(log.clone()));
        }
        if let Some(reason) = &validation.reason {
            v.insert("reason", JsonValue::String(reason.clone()));
        }
        self.extra.insert(VALIDATION_KEY, JsonValue::Object(v));
    }

    /// Whether a validation rejected this upload: it is not uploaded
    /// again, and it is kept (as `failed`) until its build is deleted.
    pub fn failed_validation(&self) -> bool {
        self.state == Some(UploadState::Failed)
            && self
                .validation()
                .is_some_and(|v| v.result == VALIDATION_FAILED)
    }

    /// The bytes upstream would write for this upload, followed by the
    /// [`extra`](Self::extra) keys.
    pub fn to_json(&self) -> Vec<u8> {
        let mut w = JsonWriter::new();
        let testing = self.state == Some(UploadState::Testing);
        let state = if testing {
            Some(UploadState::Uploading)
        } else {
            self.state
        };
        let mut extra = self.extra.clone();
        if testing {
            let mut v = JsonObject::new();
            v.insert("result", JsonValue::String(VALIDATION_PENDING.to_string()));
            extra.insert(VALIDATION_KEY, JsonValue::Object(v));
        } else if self
            .validation()
            .is_some_and(|v| v.result == VALIDATION_PENDING)
        {
            extra.remove(VALIDATION_KEY);
        }
        w.opt_str("state", state.map(UploadState::as_str));
        write_time(&mut w, &self.wire, "state_time", self.state_time);
        w.opt_str("external_id", self.external_id.as_deref())
            .opt_str("external_name", self.external_name.as_deref())
            .opt_str("format", self.format.as_deref())
            .opt_str("username", self.username.as_deref())
            .opt_str("python_path", self.python_path.as_deref())
            .opt_str("shell_type", self.shell_type.as_deref())
            .extra(&extra);
        w.finish()
    }

    /// Decode an upload; its location fields stay empty (see
    /// [`from_json_at`](Self::from_json_at)).
    pub fn from_json(id: &str, data: &[u8]) -> Result<Self, ModelError> {
        Self::from_json_at("", "", "", id, data)
    }

    /// Decode upload `id` of build `build_id` of `image_name` to
    /// `provider_name`, with upstream's defaults.
    pub fn from_json_at(
        image_name: &str,
        build_id: &str,
        provider_name: &str,
        id: &str,
        data: &[u8],
    ) -> Result<Self, ModelError> {
        let f = Fields::parse("image upload", id, data)?;
        let mut wire = WireForm::default();
        let (state, state_time) = f.state_and_time("an upload state", &mut wire)?;
        let pending = f
            .get(VALIDATION_KEY)
            .and_then(JsonValue::as_object)
            .and_then(|v| v.get("result"))
            .and_then(JsonValue::as_str)
            == Some(VALIDATION_PENDING);
        let state = match state {
            Some(UploadState::Uploading) if pending => Some(UploadState::Testing),
            other => other,
        };
        Ok(Self {
            id: id.to_owned(),
            build_id: build_id.to_owned(),
            provider_name: provider_name.to_owned(),
            image_name: image_name.to_owned(),
            state,
            state_time,
            external_id: f.opt_str("external_id")?,
            external_name: f.opt_str("external_name")?,
            format: f.opt_str("format")?,
            username: f.str_or("username", "zuul")?,
            python_path: f.str_or("python_path", "/usr/bin/python2")?,
            shell_type: f.opt_str("shell_type")?,
            extra: f.extra(UPLOAD_KNOWN),
            wire,
        })
    }
}

#[cfg(test)]
mod validation_tests {
    #![allow(clippy::unwrap_used)] // tests fail by panicking
    use super::*;

    #[test]
    fn a_testing_upload_is_written_as_upstreams_uploading_with_a_pending_marker() {
        let mut upload = ImageUpload::new("img", "b1", "p1", UploadState::Testing);
        upload.external_id = Some("image-1".into());
        let text = String::from_utf8(upload.to_json()).unwrap();
        // Upstream's ImageUpload accepts only uploading/ready/deleting/failed.
        assert!(text.starts_with(r#"{"state": "uploading""#), "{text}");
        assert!(
            text.ends_with(r#""validation": {"result": "pending"}}"#),
            "{text}"
        );
        let back = ImageUpload::from_json("0000000001", text.as_bytes()).unwrap();
        assert_eq!(back.state, Some(UploadState::Testing));

        // Passed: ready, the marker replaced by the outcome.
        let mut passed = back.clone();
        passed.set_validation(&Validation {
            result: VALIDATION_PASSED.into(),
            log: Some("/var/log/v.log".into()),
            reason: None,
        });
        passed.set_state(UploadState::Ready);
        let text = String::from_utf8(passed.to_json()).unwrap();
        assert!(text.starts_with(r#"{"state": "ready""#), "{text}");
        assert!(
            text.contains(r#""validation": {"result": "passed", "log": "/var/log/v.log"}"#),
            "{text}"
        );

        // An upload in another state never carries the pending marker.
        let mut deleting = back;
        deleting.set_state(UploadState::Deleting);
        let text = String::from_utf8(deleting.to_json()).unwrap();
        assert!(!text.contains("pending"), "{text}");
        // A plain upstream `uploading` upload stays uploading.
        let plain = ImageUpload::from_json("0000000002", br#"{"state": "uploading"}"#).unwrap();
        assert_eq!(plain.state, Some(UploadState::Uploading));
    }
}

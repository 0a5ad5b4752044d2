//! The cloud a run stands on, each its own process that outlives the
//! launchers: the OpenStack simulator, moto's EC2 server, or kube-sim.
//! Each gives its servers in one shape ([`CloudServer`]), the provider
//! block of `nodepool.yaml` and the launcher's environment.
//!
//! What counts as a server, per cloud:
//! - openstack: every server the simulator holds;
//! - aws: every instance moto holds that is not `terminated` (a
//!   `shutting-down` or `stopped` one is still there, so still a leak if
//!   it has no node record), live while `pending` or `running`;
//! - kubernetes: every namespace but kube-sim's own (`default`,
//!   `kube-*`), live until its deletion started.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodepool_core::Secret;
use nodepool_drivers::aws::client::{AwsClient, Params};
use nodepool_drivers::aws::sigv4::Credentials;
use serde_json::Value;

use crate::procs::{CloudServer, SimProcess};
use crate::setup::{self, LABEL, PROVIDER};
use crate::ChaosError;

/// Which cloud a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CloudKind {
    /// The OpenStack simulator (`openstack-sim`).
    Openstack,
    /// moto's EC2 server (`$NODEPOOL_TEST_MOTO`), driver `aws`.
    Aws,
    /// The Kubernetes API simulator (`kube-sim`), driver `kubernetes`.
    Kubernetes,
}

impl CloudKind {
    /// Its `--cloud` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Openstack => "openstack",
            Self::Aws => "aws",
            Self::Kubernetes => "kubernetes",
        }
    }
}

/// The region of the aws provider.
const REGION: &str = "us-west-2";

/// A running cloud.
pub enum CloudProcess {
    /// The OpenStack simulator and its `clouds.yaml`.
    Openstack {
        /// The simulator (shared with the fault injector).
        sim: Arc<SimProcess>,
        /// `clouds.yaml` for the launchers.
        clouds: PathBuf,
    },
    /// moto.
    Aws(Box<Moto>),
    /// kube-sim.
    Kubernetes(KubeSim),
}

impl CloudProcess {
    /// Start `kind` with its state and log in `dir`, room for `max_servers`.
    pub async fn start(kind: CloudKind, dir: &Path, max_servers: u64) -> Result<Self, ChaosError> {
        match kind {
            CloudKind::Openstack => {
                let bin = crate::procs::sibling_binary("openstack-sim", "OPENSTACK_SIM_BIN")?;
                let config =
                    setup::sim_config(max_servers as i64 + 5, 0.1, "demo-password", "app-secret");
                let sim = SimProcess::start(&bin, dir, &config)?;
                let clouds = dir.join("clouds.yaml");
                std::fs::write(&clouds, setup::clouds_yaml(&sim.base, "demo-password"))
                    .map_err(|e| ChaosError::Setup(format!("{}: {e}", clouds.display())))?;
                Ok(Self::Openstack {
                    sim: Arc::new(sim),
                    clouds,
                })
            }
            CloudKind::Aws => Ok(Self::Aws(Box::new(Moto::start(dir).await?))),
            CloudKind::Kubernetes => Ok(Self::Kubernetes(KubeSim::start(dir)?)),
        }
    }

    /// The OpenStack simulator, for the fault injector.
    pub fn openstack(&self) -> Option<Arc<SimProcess>> {
        match self {
            Self::Openstack { sim, .. } => Some(Arc::clone(sim)),
            _ => None,
        }
    }

    /// The provider [`PROVIDER`] (an item of `providers:`): one pool
    /// `main` of `max_servers` serving [`LABEL`].
    pub fn provider_yaml(&self, max_servers: u64) -> String {
        match self {
            Self::Openstack { .. } => setup::openstack_provider(max_servers),
            Self::Aws(moto) => format!(
                "  - name: {PROVIDER}\n    driver: aws\n    region-name: {REGION}\n    \
                 rate: 100\n    launch-retries: 3\n    cloud-images:\n      - name: stock\n        \
                 image-id: {image}\n        username: ec2-user\n    pools:\n      - name: main\n        \
                 max-servers: {max_servers}\n        host-key-checking: false\n        labels:\n          \
                 - name: {LABEL}\n            cloud-image: stock\n            \
                 instance-type: t3.micro\n            key-name: zuul\n",
                image = moto.image_id
            ),
            Self::Kubernetes(_) => format!(
                "  - name: {PROVIDER}\n    driver: kubernetes\n    context: {ctx}\n    pools:\n      \
                 - name: main\n        max-servers: {max_servers}\n        labels:\n          \
                 - name: {LABEL}\n            type: namespace\n",
                ctx = nodepool_kube_sim::CONTEXT
            ),
        }
    }

    /// What the launchers' environment needs to reach the cloud.
    pub fn launcher_env(&self) -> Vec<(String, String)> {
        let pair = |k: &str, v: String| (k.to_string(), v);
        match self {
            Self::Openstack { clouds, .. } => {
                vec![pair("OS_CLIENT_CONFIG_FILE", clouds.display().to_string())]
            }
            Self::Aws(moto) => vec![
                pair("AWS_ENDPOINT_URL", moto.url.clone()),
                pair("AWS_ACCESS_KEY_ID", "testing".into()),
                pair("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ],
            Self::Kubernetes(kube) => vec![pair(
                "KUBECONFIG",
                kube.process.kubeconfig().display().to_string(),
            )],
        }
    }

    /// Every server the cloud has now (see the module's doc).
    pub async fn servers(&self) -> Result<Vec<CloudServer>, ChaosError> {
        match self {
            Self::Openstack { sim, .. } => sim.servers().await,
            Self::Aws(moto) => moto.servers().await,
            Self::Kubernetes(kube) => kube.servers().await,
        }
    }
}

/// moto's server as its own process, with a client reading its instances.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    client: AwsClient,
    /// One of moto's stock images, which the pool boots.
    pub image_id: String,
}

impl Moto {
    /// Start `$NODEPOOL_TEST_MOTO` on a free port, logging to `dir/moto.log`.
    async fn start(dir: &Path) -> Result<Self, ChaosError> {
        let bin = std::env::var_os("NODEPOOL_TEST_MOTO")
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                ChaosError::Setup(
                    "NODEPOOL_TEST_MOTO is not set: run scripts/moto.sh install and export it"
                        .into(),
                )
            })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| ChaosError::Setup(format!("a free port: {e}")))?
            .port();
        let log_path = dir.join("moto.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| ChaosError::Setup(format!("{}: {e}", log_path.display())))?;
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| ChaosError::Setup(format!("cannot start {bin:?}: {e}")))?;
        let url = format!("http://127.0.0.1:{port}");
        let env_url = url.clone();
        let env = move |k: &str| (k == "AWS_ENDPOINT_URL").then(|| env_url.clone());
        let creds = Credentials {
            access_key_id: "testing".into(),
            secret_access_key: Secret::new("testing"),
            session_token: None,
        };
        let client = AwsClient::new(creds, REGION, &env, Duration::from_secs(30))
            .map_err(|e| ChaosError::Setup(format!("EC2 client: {e}")))?;
        let mut moto = Self {
            child,
            url,
            client,
            image_id: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                return Err(ChaosError::Setup(format!(
                    "moto did not listen on {port}; see {}",
                    log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moto.image_id = moto.stock_image().await?;
        Ok(moto)
    }

    /// An Amazon Linux image of moto's stock ones (or the first).
    async fn stock_image(&self) -> Result<String, ChaosError> {
        let mut p = Params::new();
        p.set("Owner.1", "amazon");
        let answer = self
            .client
            .ec2("DescribeImages", &p)
            .await
            .map_err(|e| ChaosError::Cloud(format!("DescribeImages: {e}")))?;
        let image = answer
            .items("imagesSet")
            .find(|i| i.text_at(&["name"]).is_some_and(|n| n.starts_with("amzn")))
            .or_else(|| answer.items("imagesSet").next());
        image
            .and_then(|i| i.text_at(&["imageId"]))
            .ok_or_else(|| ChaosError::Cloud("moto has no stock image".into()))
    }

    /// Every instance not `terminated`; live while pending or running.
    async fn servers(&self) -> Result<Vec<CloudServer>, ChaosError> {
        let mut p = Params::new();
        p.filter(
            "instance-state-name",
            &["pending", "running", "shutting-down", "stopping", "stopped"],
        );
        let answer = self
            .client
            .ec2("DescribeInstances", &p)
            .await
            .map_err(|e| ChaosError::Cloud(format!("DescribeInstances: {e}")))?;
        Ok(answer
            .items("reservationSet")
            .flat_map(|r| r.items("instancesSet"))
            .map(|i| {
                let state = i.text_at(&["instanceState", "name"]).unwrap_or_default();
                CloudServer {
                    id: i.text_at(&["instanceId"]).unwrap_or_default(),
                    metadata: i.tags(),
                    live: state == "pending" || state == "running",
                }
            })
            .collect())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kube-sim as its own process, with a client of its admin routes.
pub struct KubeSim {
    process: nodepool_kube_sim::SimProcess,
    http: reqwest::Client,
}

impl KubeSim {
    /// Start the `kube-sim` binary with its kubeconfig, state and log in
    /// `dir`.
    fn start(dir: &Path) -> Result<Self, ChaosError> {
        let bin = nodepool_kube_sim::SimProcess::find_binary()
            .map_err(|e| ChaosError::Setup(e.to_string()))?;
        let mut opts = nodepool_kube_sim::ProcessOptions::in_dir(dir);
        opts.pod_ready_delay_ms = 100;
        opts.pod_terminate_delay_ms = 100;
        let process = nodepool_kube_sim::SimProcess::spawn(&bin, &opts)
            .map_err(|e| ChaosError::Setup(format!("kube-sim: {e}")))?;
        let ca = reqwest::Certificate::from_pem(nodepool_kube_sim::CA_CERT_PEM.as_bytes())
            .map_err(|e| ChaosError::Setup(format!("kube-sim's CA: {e}")))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ChaosError::Setup(format!("HTTP client: {e}")))?;
        Ok(Self { process, http })
    }

    /// Every namespace but kube-sim's own, from `GET /_sim/objects`.
    async fn servers(&self) -> Result<Vec<CloudServer>, ChaosError> {
        let url = format!("{}/_sim/objects", self.process.url());
        let body: Value = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| ChaosError::Cloud(format!("GET {url}: {e}")))?
            .json()
            .await
            .map_err(|e| ChaosError::Cloud(format!("GET {url}: {e}")))?;
        let objects = body["objects"]
            .as_array()
            .ok_or_else(|| ChaosError::Cloud(format!("GET {url}: no objects")))?;
        Ok(objects
            .iter()
            .filter(|o| o["kind"] == "Namespace")
            .filter_map(|o| {
                let name = o["name"].as_str()?;
                (name != "default" && !name.starts_with("kube-")).then(|| CloudServer {
                    id: name.to_string(),
                    metadata: o["labels"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                                .collect()
                        })
                        .unwrap_or_default(),
                    live: o["deleting"] != true,
                })
            })
            .collect())
    }
}

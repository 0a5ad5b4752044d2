//! The kubeconfig the simulator writes for itself: one cluster, one user
//! with a bearer token, one context, all named [`CONTEXT`].

use std::path::Path;

use crate::error::Error;

/// The name of the cluster, user and context in the written kubeconfig.
pub const CONTEXT: &str = "kube-sim";

/// The kubeconfig YAML for `server` and `token`; with `tls`, trusting the
/// built-in CA.
pub fn render(server: &str, token: &str, tls: bool) -> String {
    let ca = if tls {
        format!(
            "    certificate-authority-data: {}\n",
            crate::meta::base64(crate::CA_CERT_PEM.as_bytes())
        )
    } else {
        String::new()
    };
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {CONTEXT}\n  \
           cluster:\n{ca}    \
             server: {server}\n\
         users:\n\
         - name: {CONTEXT}\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: {CONTEXT}\n  \
           context:\n    \
             cluster: {CONTEXT}\n    \
             user: {CONTEXT}\n    \
             namespace: default\n\
         current-context: {CONTEXT}\n\
         preferences: {{}}\n"
    )
}

/// Write the kubeconfig to `path` (mode 0600 on Unix, as kubectl wants).
pub fn write(path: &Path, server: &str, token: &str, tls: bool) -> Result<(), Error> {
    let file_error = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(file_error)?;
    }
    std::fs::write(path, render(server, token, tls)).map_err(file_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(file_error)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    #[test]
    fn kubeconfig_names_server_token_and_context() {
        let text = super::render("https://127.0.0.1:1234", "tok", true);
        assert!(text.contains("    server: https://127.0.0.1:1234\n"));
        assert!(text.contains("    certificate-authority-data: LS0t"));
        assert!(text.contains("    token: tok\n"));
        assert!(text.contains("current-context: kube-sim\n"));
        assert!(text.contains("  context:\n    cluster: kube-sim\n"));
    }
}

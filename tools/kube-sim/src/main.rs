//! `kube-sim`: the Kubernetes API simulator as its own process.

fn main() {}

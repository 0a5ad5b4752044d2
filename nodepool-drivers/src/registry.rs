//! The built-in drivers, registered by name.

use nodepool_core::config::DriverRegistry;

/// Register every built-in driver: `openstack`, `aws`, `static`, `fake`,
/// `kubernetes` and `openshiftpods`.
pub fn register_builtin(reg: &mut DriverRegistry) {
    crate::aws::register(reg);
    crate::openstack::register(reg);
    crate::kubernetes::register(reg);
    crate::openshiftpods::register(reg);
    crate::static_hosts::register(reg);
    crate::fake::config::register(reg);
}

/// A registry holding the built-in drivers.
pub fn builtin() -> DriverRegistry {
    let mut reg = DriverRegistry::new();
    register_builtin(&mut reg);
    reg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_names_the_six_drivers() {
        assert_eq!(
            builtin().names(),
            vec![
                "aws",
                "fake",
                "kubernetes",
                "openshiftpods",
                "openstack",
                "static"
            ]
        );
    }
}

//! openstack provider configuration.

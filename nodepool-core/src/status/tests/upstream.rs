// Expected outputs, printed by upstream nodepool 11.0.0's own status.py
// (PrettyTable 0.7.2) on the same records with time.time() fixed at NOW:
// tests/gen_upstream.py (run with upstream's Python). Do not edit by hand.

pub(super) const NODE_LIST_DEFAULT: &str = r#"+------------+---------------+--------------------+-----------+-------------+-------------+--------+-------------+----------+
| ID         | Provider      | Label              | Server ID | Public IPv4 | IPv6        | State  | Age         | Locked   |
+------------+---------------+--------------------+-----------+-------------+-------------+--------+-------------+----------+
| 0000000001 | fake-provider | ubuntu-noble       | srv-1     | 203.0.113.5 | 2001:db8::5 | ready  | 00:01:02:03 | unlocked |
| 0000000002 | fake-provider | ubuntu-noble,small |           |             |             | in-use | 01:01:01:01 | locked   |
+------------+---------------+--------------------+-----------+-------------+-------------+--------+-------------+----------+"#;

pub(super) const NODE_LIST_DETAIL: &str = r#"+------------+---------------+--------------------+-----------+-------------+-------------+--------+-------------+----------+------+--------------+--------------+-----+----------+------+-----------+----------------+----------+-----------+-----------+----------------------------------------------+
| ID         | Provider      | Label              | Server ID | Public IPv4 | IPv6        | State  | Age         | Locked   | Pool | Hostname     | Private IPv4 | AZ  | Username | Port | Launcher  | Allocated To   | Hold Job | Comment   | User Data | Driver Data                                  |
+------------+---------------+--------------------+-----------+-------------+-------------+--------+-------------+----------+------+--------------+--------------+-----+----------+------+-----------+----------------+----------+-----------+-----------+----------------------------------------------+
| 0000000001 | fake-provider | ubuntu-noble       | srv-1     | 203.0.113.5 | 2001:db8::5 | ready  | 00:01:02:03 | unlocked | main | np0000000001 | 10.0.0.5     | az1 | zuul     | 22   | host-1234 |                |          |           |           |                                              |
| 0000000002 | fake-provider | ubuntu-noble,small |           |             |             | in-use | 01:01:01:01 | locked   |      |              |              |     | zuul     | 2222 |           | 100-0000000007 | job      | it's held |           | {'zone': 'b', 'n': 1, 'ok': True, 'x': None} |
+------------+---------------+--------------------+-----------+-------------+-------------+--------+-------------+----------+------+--------------+--------------+-----+----------+------+-----------+----------------+----------+-----------+-----------+----------------------------------------------+"#;

pub(super) const NODE_LIST_JSON: &str = r#"[{"id": "0000000001", "provider": "fake-provider", "label": ["ubuntu-noble"], "server_id": "srv-1", "public_ipv4": "203.0.113.5", "ipv6": "2001:db8::5", "state": "ready", "age": "00:01:02:03", "locked": "unlocked", "pool": "main", "hostname": "np0000000001", "private_ipv4": "10.0.0.5", "AZ": "az1", "username": "zuul", "connection_port": 22, "launcher": "host-1234", "allocated_to": null, "hold_job": null, "comment": null, "user_data": null, "driver_data": null}, {"id": "0000000002", "provider": "fake-provider", "label": ["ubuntu-noble", "small"], "server_id": null, "public_ipv4": null, "ipv6": null, "state": "in-use", "age": "01:01:01:01", "locked": "locked", "pool": null, "hostname": null, "private_ipv4": null, "AZ": null, "username": "zuul", "connection_port": 2222, "launcher": null, "allocated_to": "100-0000000007", "hold_job": "job", "comment": "it's held", "user_data": null, "driver_data": {"zone": "b", "n": 1, "ok": true, "x": null}}]"#;

pub(super) const NODE_LIST_STATE_ID: &str = r#"+------------+--------+
| ID         | State  |
+------------+--------+
| 0000000001 | ready  |
| 0000000002 | in-use |
+------------+--------+"#;

pub(super) const REQUEST_LIST: &str = r#"+----------------+----------+-----------+----------------+--------------------+------------+------------------------------+----------+
| Request ID     | Priority | State     | Requestor      | Node Types         | Nodes      | Declined By                  | Event ID |
+----------------+----------+-----------+----------------+--------------------+------------+------------------------------+----------+
| 100-0000000007 | 3        | fulfilled | zuul-scheduler | ubuntu-noble,small | 0000000002 | host-1234-fake-provider-main | ev1      |
| 200-0000000009 | 0        | requested |                | big                |            |                              |          |
+----------------+----------+-----------+----------------+--------------------+------------+------------------------------+----------+"#;

pub(super) const REQUEST_LIST_JSON: &str = r#"[{"id": "100-0000000007", "relative_priority": 3, "state": "fulfilled", "requestor": "zuul-scheduler", "node_types": ["ubuntu-noble", "small"], "nodes": ["0000000002"], "declined_by": ["host-1234-fake-provider-main"], "event_id": "ev1"}, {"id": "200-0000000009", "relative_priority": 0, "state": "requested", "requestor": null, "node_types": ["big"], "nodes": [], "declined_by": [], "event_id": null}]"#;

pub(super) const DIB_IMAGE_LIST: &str = r#"+-------------+--------+-----------+-----------+--------+-------------+
| ID          | Image  | Builder   | Formats   | State  | Age         |
+-------------+--------+-----------+-----------+--------+-------------+
| ubuntu-5d3f | ubuntu | builder-1 | qcow2,raw | ready  | 00:00:10:01 |
| debian-9a9a | debian | builder-1 |           | paused | 00:00:00:05 |
+-------------+--------+-----------+-----------+--------+-------------+"#;

pub(super) const DIB_IMAGE_LIST_JSON: &str = r#"[{"id": "ubuntu-5d3f", "image": "ubuntu", "builder": "builder-1", "formats": ["qcow2", "raw"], "state": "ready", "age": 1699999399}, {"id": "debian-9a9a", "image": "debian", "builder": "builder-1", "formats": [], "state": "paused", "age": 1699999995}]"#;

pub(super) const IMAGE_LIST: &str = r#"+----------+------------+---------------+--------+---------------------+-------------------+-----------+-------------+
| Build ID | Upload ID  | Provider      | Image  | Provider Image Name | Provider Image ID | State     | Age         |
+----------+------------+---------------+--------+---------------------+-------------------+-----------+-------------+
| 5d3f     | 0000000001 | fake-provider | ubuntu | ubuntu-1700         | img-1             | ready     | 01:00:00:00 |
| 5d3f     | 0000000002 | other         | ubuntu |                     |                   | uploading | 00:00:00:01 |
+----------+------------+---------------+--------+---------------------+-------------------+-----------+-------------+"#;

pub(super) const IMAGE_LIST_JSON: &str = r#"[{"id": "5d3f", "upload_id": "0000000001", "provider": "fake-provider", "image": "ubuntu", "external_name": "ubuntu-1700", "external_id": "img-1", "state": "ready", "age": 1699913600}, {"id": "5d3f", "upload_id": "0000000002", "provider": "other", "image": "ubuntu", "external_name": null, "external_id": null, "state": "uploading", "age": 1699999999}]"#;

pub(super) const EMPTY_REQUEST_LIST: &str = r#"+------------+----------+-------+-----------+------------+-------+-------------+----------+
| Request ID | Priority | State | Requestor | Node Types | Nodes | Declined By | Event ID |
+------------+----------+-------+-----------+------------+-------+-------------+----------+
+------------+----------+-------+-----------+------------+-------+-------------+----------+"#;

pub(super) const WIDE_TEXT: &str = r#"+------------+-------+-------------+----------+
| ID         | Label | Age         | Comment  |
+------------+-------+-------------+----------+
| 0000000003 | 日本  | -1:23:58:30 | line one |
|            |       |             | line two |
+------------+-------+-------------+----------+"#;

pub(super) const WIDE_JSON: &str = r#"[{"id": "0000000003", "provider": null, "label": ["\u65e5\u672c"], "server_id": null, "public_ipv4": null, "ipv6": null, "state": "ready", "age": "-1:23:58:30", "locked": "unlocked", "pool": null, "hostname": null, "private_ipv4": null, "AZ": null, "username": null, "connection_port": 22, "launcher": null, "allocated_to": null, "hold_job": null, "comment": "line one\nline two", "user_data": null, "driver_data": null}]"#;

pub(super) const IMAGE_STATUS: &str = r#"+--------+--------+---------------+-------------------+
| Image  | Paused | Build Request | Build Request Age |
+--------+--------+---------------+-------------------+
| debian | True   |               |                   |
| ubuntu | False  | pending       | 00:00:00:30       |
| fedora | False  | building      | 00:02:00:00       |
+--------+--------+---------------+-------------------+"#;

pub(super) const IMAGE_STATUS_JSON: &str = r#"[{"image": "debian", "paused": true, "build_request": null, "build_request_age": null}, {"image": "ubuntu", "paused": false, "build_request": "pending", "build_request_age": 1699999970}, {"image": "fedora", "paused": false, "build_request": "building", "build_request_age": 1699992800}]"#;

pub(super) const LABEL_LIST: &str = r#"+-------+
| Label |
+-------+
| small |
+-------+"#;

pub(super) const LABEL_LIST_JSON: &str = r#"[{"label": "small"}]"#;

# Runs upstream nodepool 11.0.0's status.py on fake ZooKeeper objects and
# prints the outputs used as expected values in nodepool-core/src/status/tests.rs.
import time, json
from nodepool import status
from nodepool.zk.zookeeper import Node, NodeRequest, ImageBuild, ImageUpload

NOW = 1700000000.0
time.time = lambda: NOW

class FakeZK:
    enable_cache = True
    def __init__(self, nodes=(), reqs=(), builds=(), uploads=(), paused=None, pools=()):
        self.nodes = list(nodes); self.reqs = list(reqs); self.builds=list(builds)
        self.uploads=list(uploads); self.paused = paused or {}; self.pools=list(pools)
    def nodeIterator(self, cached_ids=False): return iter(self.nodes)
    def getNode(self, i): return next((n for n in self.nodes if n.id == i), None)
    def nodeRequestIterator(self, cached_ids=False): return iter(self.reqs)
    def getCachedBuilds(self): return self.builds
    def getCachedImages(self):
        class I: pass
        out=[]
        for k,v in self.paused.items():
            i=I(); i.image_name=k; i.paused=v; out.append(i)
        return out
    def getCachedImageUploads(self): return self.uploads
    def getRegisteredPools(self): return self.pools

n1 = Node('0000000001'); n1.state='ready'; n1.state_time=NOW-3723.9; n1.provider='fake-provider'
n1.type=['ubuntu-noble']; n1.external_id='srv-1'; n1.public_ipv4='203.0.113.5'; n1.public_ipv6='2001:db8::5'
n1.pool='main'; n1.hostname='np0000000001'; n1.private_ipv4='10.0.0.5'; n1.az='az1'; n1.username='zuul'
n1.connection_port=22; n1.launcher='host-1234'; n1.lock_contenders=[]
n2 = Node('0000000002'); n2.state='in-use'; n2.state_time=NOW-90061; n2.provider='fake-provider'
n2.type=['ubuntu-noble','small']; n2.external_id=None; n2.allocated_to='100-0000000007'; n2.lock_contenders=['zuul']
n2.comment="it's held"; n2.driver_data={'zone': 'b', 'n': 1, 'ok': True, 'x': None}; n2.hold_job='job'; n2.connection_port=2222
n2.username='zuul'
zk = FakeZK(nodes=[n1, n2])
print("=== node_list_default")
print(status.output(status.node_list(zk), 'pretty', ['id', 'provider', 'label', 'server_id','public_ipv4', 'ipv6', 'state', 'age', 'locked']))
print("=== node_list_detail")
f=['id', 'provider', 'label', 'server_id','public_ipv4', 'ipv6', 'state', 'age', 'locked','pool', 'hostname', 'private_ipv4', 'AZ','username', 'connection_port', 'launcher','allocated_to', 'hold_job','comment', 'user_data', 'driver_data']
print(status.output(status.node_list(zk), 'pretty', f))
print("=== node_list_json")
print(status.output(status.node_list(zk), 'json'))
print("=== node_list_fields_state_id")
print(status.output(status.node_list(zk), 'pretty', ['state','id','bogus']))
r1 = NodeRequest('100-0000000007'); r1.state='fulfilled'; r1.requestor='zuul-scheduler'; r1.node_types=['ubuntu-noble','small']
r1.nodes=['0000000002']; r1.declined_by=['host-1234-fake-provider-main']; r1.event_id='ev1'; r1.relative_priority=3
r2 = NodeRequest('200-0000000009'); r2.state='requested'; r2.node_types=['big']
zk = FakeZK(reqs=[r1, r2])
print("=== request_list")
print(status.output(status.request_list(zk), 'pretty'))
print("=== request_list_json")
print(status.output(status.request_list(zk), 'json'))
b1 = ImageBuild('ubuntu', '5d3f'); b1.state='ready'; b1.state_time=NOW-600.5; b1.builder='builder-1'; b1.formats=['qcow2','raw']
b2 = ImageBuild('debian', '9a9a'); b2.state='building'; b2.state_time=NOW-5; b2.builder='builder-1'; b2.formats=[]
zk = FakeZK(builds=[b1, b2], paused={'debian': True})
print("=== dib_image_list")
print(status.output(status.dib_image_list(zk), 'pretty'))
print("=== dib_image_list_json")
print(status.output(status.dib_image_list(zk), 'json'))
u1 = ImageUpload('5d3f', 'fake-provider', 'ubuntu', '0000000001'); u1.state='ready'; u1.state_time=NOW-86400; u1.external_name='ubuntu-1700'; u1.external_id='img-1'
u2 = ImageUpload('5d3f', 'other', 'ubuntu', '0000000002'); u2.state='uploading'; u2.state_time=NOW-1
zk = FakeZK(uploads=[u1, u2])
print("=== image_list")
print(status.output(status.image_list(zk), 'pretty'))
print("=== image_list_json")
print(status.output(status.image_list(zk), 'json'))
print("=== empty_request_list")
print(status.output(status.request_list(FakeZK()), 'pretty'))
print("=== empty_json")
print(status.output(status.request_list(FakeZK()), 'json'))
print("=== wide")
n3 = Node('0000000003'); n3.state='ready'; n3.state_time=NOW+90; n3.type=['日本'] ; n3.comment='line one\nline two'; n3.lock_contenders=[]
print(status.output(status.node_list(FakeZK(nodes=[n3])), 'pretty', ['id','label','age','comment']))
print(status.output(status.node_list(FakeZK(nodes=[n3])), 'json'))
print("=== ages")
for dt in [0, 59.99, 61, 3600*24*123+1, -1, -90, -86401]:
    print(repr(status.age(NOW - dt)))
print("=== image_status")
from nodepool.zk.zookeeper import ImageBuildRequest
class ISZK(FakeZK):
    def getImageNames(self): return ['debian', 'ubuntu', 'fedora']
    def getBuildRequest(self, i):
        return {'ubuntu': ImageBuildRequest('ubuntu', True, NOW - 30), 'fedora': ImageBuildRequest('fedora', False, NOW - 7200)}.get(i)
    def getImagePaused(self, i): return i == 'debian'
print(status.output(status.image_status(ISZK()), 'pretty'))
print(status.output(status.image_status(ISZK()), 'json'))
print("=== label_list")
class P: pass
p1=P(); p1.supported_labels=['small']; p2=P(); p2.supported_labels=['small']
print(status.output(status.label_list(FakeZK(pools=[p1,p2])), 'pretty'))
print(status.output(status.label_list(FakeZK(pools=[p1,p2])), 'json'))

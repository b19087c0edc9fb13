# shellcheck shell=bash
# A throwaway ClickHouse cluster on loopback for sink's cluster test: one
# ZooKeeper (Debian's zookeeper package, run in the foreground) and two
# ClickHouse servers (Debian's 18.16) that are the two replicas of one
# shard of the cluster "sluice_test". Meant to be sourced after
# scripts/services.sh (it uses its helpers and SERVICE_PIDS, so
# stop_services ends these processes too, by PID):
#
#   source scripts/services.sh; source scripts/clickhouse-cluster.sh
#   trap stop_services EXIT
#   start_clickhouse_cluster   # exports SLUICE_TEST_CLICKHOUSE_CLUSTER=sluice_test and
#                              #   SLUICE_TEST_CLICKHOUSE_CLUSTER_ADDRS=127.0.0.1:P1,127.0.0.1:P2
#   go test -run TestClickHouseCluster ./sink/
#
# Current servers would use their embedded Keeper instead of ZooKeeper;
# 18.16 has none.

_zk_ok() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# _clickhouse_cluster_config DIR N TCP HTTP INTERSERVER ZKPORT TCP1 TCP2
_clickhouse_cluster_config() {
  local dir="$1" n="$2" tcp="$3" http="$4" inter="$5" zk="$6" t1="$7" t2="$8"
  clickhouse_config "$dir" "$tcp" "$http"
  mkdir -p "$dir/config.d"
  # 18.16 reads config.d beside the main file.
  cat >"$dir/config.d/cluster.xml" <<EOF
<yandex>
  <interserver_http_port>$inter</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <remote_servers>
    <sluice_test>
      <shard>
        <internal_replication>true</internal_replication>
        <replica><host>127.0.0.1</host><port>$t1</port></replica>
        <replica><host>127.0.0.1</host><port>$t2</port></replica>
      </shard>
    </sluice_test>
  </remote_servers>
  <zookeeper><node><host>127.0.0.1</host><port>$zk</port></node></zookeeper>
  <macros><shard>01</shard><replica>n$n</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
EOF
}

start_clickhouse_cluster() {
  if [ -n "${SLUICE_TEST_CLICKHOUSE_CLUSTER_ADDRS:-}" ]; then
    return 0
  fi
  if ! command -v clickhouse-server >/dev/null; then
    _apt_install clickhouse-server clickhouse-client || return 1
  fi
  if [ ! -f /usr/share/java/zookeeper.jar ]; then
    echo "clickhouse-cluster.sh: installing zookeeper (Debian package)" >&2
    _apt_install zookeeper || { echo "clickhouse-cluster.sh: cannot install zookeeper" >&2; return 1; }
  fi
  _services_tmpdir
  local zk t1 t2 h1 h2 i1 i2 dir pid n
  zk="$(_free_port)" && t1="$(_free_port)" && t2="$(_free_port)" && h1="$(_free_port)" && h2="$(_free_port)" &&
    i1="$(_free_port)" && i2="$(_free_port)" || return 1
  dir="$SERVICE_TMPDIR/zookeeper-$zk"
  mkdir -p "$dir/data"
  printf 'tickTime=500\ndataDir=%s/data\nclientPort=%s\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n' \
    "$dir" "$zk" >"$dir/zoo.cfg"
  java -Xmx256m -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar \
    org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" >"$dir/zk.log" 2>&1 &
  pid=$!
  _wait_up "$pid" _zk_ok "$zk" || { echo "clickhouse-cluster.sh: zookeeper did not start ($dir/zk.log)" >&2; return 1; }
  SERVICE_PIDS+=("$pid")
  for n in 1 2; do
    local tcp http inter
    if [ "$n" = 1 ]; then tcp=$t1 http=$h1 inter=$i1; else tcp=$t2 http=$h2 inter=$i2; fi
    dir="$SERVICE_TMPDIR/clickhouse-cluster-$tcp"
    _clickhouse_cluster_config "$dir" "$n" "$tcp" "$http" "$inter" "$zk" "$t1" "$t2"
    clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 &
    pid=$!
    _wait_up "$pid" _clickhouse_ping "$tcp" "$http" || { echo "clickhouse-cluster.sh: node $n did not start ($dir/log)" >&2; return 1; }
    SERVICE_PIDS+=("$pid")
  done
  export SLUICE_TEST_CLICKHOUSE_CLUSTER=sluice_test
  export SLUICE_TEST_CLICKHOUSE_CLUSTER_ADDRS="127.0.0.1:$t1,127.0.0.1:$t2"
  echo "clickhouse-cluster.sh: zookeeper on $zk, clickhouse replicas on $SLUICE_TEST_CLICKHOUSE_CLUSTER_ADDRS" >&2
}

#!/bin/sh
# etcd's auth for one oracle cluster, least privilege: the oracle's user may read and write its
# cluster's keys, /hlc-oracle/<cluster name>/, and nothing else. Run once, as etcd's root (it is
# idempotent: a second run changes nothing):
#   ETCDCTL_ENDPOINTS=https://etcd-1:2379 ETCDCTL_CACERT=ca.pem ETCDCTL_CERT=root.pem \
#   ETCDCTL_KEY=root-key.pem HLC_ORACLE_CLUSTER_NAME=compose deploy/etcd-auth.sh
# What it runs, by hand:
#   etcdctl user add root --no-password                # root logs in by its certificate (CN root)
#   etcdctl user grant-role root root
#   etcdctl role add hlc-oracle-<name>
#   etcdctl role grant-permission hlc-oracle-<name> readwrite /hlc-oracle/<name>/ --prefix=true
#   etcdctl user add oracle --no-password              # by its certificate's CN; or with a
#                                                      # password (the node's etcd_password_file)
#   etcdctl user grant-role oracle hlc-oracle-<name>
#   etcdctl auth enable
# That role is all the oracle needs: etcd 3.4 lets any authenticated user grant and keep leases,
# compact, and read the alarms and the endpoint status (the quota guard). Without it the node
# stops at start-up (exit 1) with "permission denied: txn of /hlc-oracle/<name>/members/<id>
# refused to user 'oracle'"; any key outside the prefix is refused the same way.
set -eu
name=${HLC_ORACLE_CLUSTER_NAME:?set it to the oracle cluster name, cluster.name}
user=${ORACLE_ETCD_USER:-oracle}
role="hlc-oracle-$name"
prefix="/hlc-oracle/$name/"

# Runs etcdctl; an answer saying the change is already there counts as done.
ctl() {
    if ! output=$(etcdctl "$@" 2>&1); then
        case "$output" in
            *"already exists"* | *"already granted"* | *"already has"*) ;;
            *) echo "etcdctl $*: $output" >&2; exit 1 ;;
        esac
    fi
}

ctl user add root --no-password
ctl user grant-role root root
ctl role add "$role"
ctl role grant-permission "$role" readwrite "$prefix" --prefix=true
ctl user add "$user" --no-password
ctl user grant-role "$user" "$role"
ctl auth enable
echo "etcd auth on: user $user may read and write $prefix (role $role)"

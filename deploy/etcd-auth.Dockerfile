# The one-shot job that turns etcd's auth on for the oracle (deploy/etcd-auth.sh, as etcd's root
# user): etcdctl from the release image the etcd members run, on a base that has a shell.
#   docker build -f deploy/etcd-auth.Dockerfile -t hlc-oracle-etcd-auth .
FROM gcr.io/etcd-development/etcd:v3.4.23 AS etcd

FROM debian:bookworm-slim AS runtime
COPY --from=etcd /usr/local/bin/etcdctl /usr/local/bin/etcdctl
COPY deploy/etcd-auth.sh /usr/local/bin/etcd-auth.sh
ENV ETCDCTL_API=3
USER 10003:10003
ENTRYPOINT ["/bin/sh", "/usr/local/bin/etcd-auth.sh"]

#!/bin/sh
# Test-grade certificates for the etcd of deploy/ (compose and Kubernetes), made with openssl:
#   deploy/etcd-pki.sh deploy/etcd-pki
# writes into that folder (created 0700; never commit it):
#   ca.pem, ca-key.pem                   the CA that signs everything below (keep ca-key.pem away)
#   etcd-server.pem, etcd-server-key.pem  every etcd member's certificate, client and peer side:
#                                        names every member (compose's etcd-1..3, Kubernetes'
#                                        etcd-N.etcd), since the oracle checks each member's
#                                        certificate against one name, its first endpoint's host
#   oracle.pem, oracle-key.pem           the oracle's client certificate: CN oracle, its etcd user
#   root.pem, root-key.pem               etcd's root user (CN root), for deploy/etcd-auth.sh only
# Production: use your own CA and issue the same names; only the CNs oracle and root matter to
# etcd's auth. Keys are 0644 so that the containers' users can read the bind mounts (compose);
# the folder itself is 0700.
set -eu
out=${1:?usage: etcd-pki.sh OUTPUT_DIR}
days=${ETCD_PKI_DAYS:-365}
mkdir -p "$out"
chmod 0700 "$out"
cd "$out"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key ca-key.pem
openssl req -x509 -new -key ca-key.pem -sha256 -days "$((days + 30))" -subj "/CN=hlc-oracle etcd CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem

# leaf NAME CN EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
leaf() {
    key "$1-key.pem"
    openssl req -new -key "$1-key.pem" -subj "/CN=$2" -out "$1.csr"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$3"
        if [ -n "${4:-}" ]; then echo "subjectAltName=$4"; fi
    } > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 \
        -days "$days" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
    chmod 0644 "$1-key.pem"
}

members="DNS:etcd-1,DNS:etcd-2,DNS:etcd-3"
members="$members,DNS:etcd-0.etcd,DNS:etcd-1.etcd,DNS:etcd-2.etcd,DNS:*.etcd"
members="$members,DNS:*.etcd.hlc-oracle.svc,DNS:*.etcd.hlc-oracle.svc.cluster.local"
leaf etcd-server etcd serverAuth,clientAuth "$members,DNS:localhost,IP:127.0.0.1"
leaf oracle oracle clientAuth
leaf root root clientAuth
rm -f ca.srl
chmod 0600 ca-key.pem
echo "etcd certificates in $out: ca.pem, etcd-server.pem, oracle.pem, root.pem (and keys)"

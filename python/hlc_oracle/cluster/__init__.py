"""Clustered mode on etcd: one elected leader serves, followers redirect (the documentation's
"Clustered mode" page, ``docs/cluster.md``).

- :mod:`.etcd`: the client, one gRPC channel to every endpoint;
- :mod:`.session`: the lease, its keepalives and the local serving deadline;
- :mod:`.election`: campaign, watch, resign; epoch = the winning revision;
- :mod:`.fence`: the one builder of a leader's writes (compare the leader key's value and create
  revision);
- :mod:`.members`: ``members/<node-id>``, so two live nodes never share an id;
- :mod:`.window_store`: the timestamp window in etcd;
- :mod:`.decisions`: group-commit decisions in etcd (the durable step of a leader's commits),
  their recovery on promotion and their retention;
- :mod:`.leader_liveness`: a follower's connection to the leader, whose refusal (the leader's
  process is gone) lets it depose the leader without waiting out its lease;
- :mod:`.node`: the leadership loop the server drives.
"""

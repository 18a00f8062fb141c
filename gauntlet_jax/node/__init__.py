"""What miners and validators share at run time, between the roles above and the protocol,
compress, model and data layers below:

- `network`: the peer network as one node sees it (chain, commitments, buckets, put windows);
- `replica`: θ as every node holds it, advanced by the one outer step;
- `placement`: where a node's arrays live on its mesh;
- `multihost`: joining a multi-host JAX job, and leader-only I/O handed to every process;
- `startup`: a registered node's bucket, uid, commitment, start window, catch-up, checkpoints;
- `metrics`: the per-peer, per-window records every score is explained from;
- `launch`: the `validate` / `mine` entry points' common start-up and clean stop.
"""

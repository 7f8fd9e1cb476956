"""Capture-driven testing: what recorded plant traffic shows, for fuzzing and for conduit audits.

`pcap` reads pcap and pcapng files (with dpkt) into IP packets; `flows` reassembles TCP streams
(retransmissions, out-of-order and overlapping segments) and groups UDP datagrams; `recognise`
names each flow's protocol by port and by parsing with the protocol modules' own framing;
`seeds` writes and reads the seed file (request types with their real values, observed
sessions) that `otfuzz run --seeds` fuzzes from; `audit` maps flows onto a system model's zones
and conduit policies. Nothing here sends a byte.
"""

/*  A session: a client that said HELLO on the ROUTER socket, with what it
    holds and waits for, and how much of what was sent to it it has read.
    commands.c opens one (HELLO); sessions.c ends it, and the server frees
    it once the message or pass in hand is done. Its producer, if its
    client id is one, is producers.h's. */
#ifndef BROKER_SESSIONS_H
#define BROKER_SESSIONS_H

#include "broker.h"

/*  Heartbeats remembered per session, to know how much of what was sent it
    has read (4.9). */
#define PEER_BEATS 8

/*  A client that said HELLO on the ROUTER socket. */
typedef struct peer {
    uint8_t routing_id[256];
    size_t routing_id_size;
    char client_id[AQ_NAME_MAX + 1];
    char key[AUTH_KEY_SIZE + 1];  /* the client's CURVE key; "" without CURVE */
    auth_grant_t grant;           /* its roles and queues */
    auth_owner_t *owner;          /* its key's share of the limits; NULL: none counted */
    int plain;                    /* counted in plain_sessions (not admin when it began) */
    int fd;                       /* its connection, or -1 */
    uint64_t conn_stamp;          /* which connection of fd (conns_greet) */
    uint64_t serial;              /* unique per session over the broker's life */
    consumer_t consumer;
    uint64_t credit_batch;        /* items per ITEMS; 0: one ITEM per message */
    int with_priority;            /* deliveries carry their priority (CREDIT `with`) */
    char credit_tag[AQ_TAG_MAX];
    size_t credit_tag_size;
    struct producer *producer;    /* the producer whose id is this client id */
    list_node_t joins;            /* joiner_t of this session still waiting */
    uint64_t join_count;
    uint32_t expired_streak;      /* leases expired in a row, no ack between */
    uint64_t reply_bytes;         /* bytes of replies sent, ever */
    uint64_t beat;                /* last heartbeat number sent */
    uint64_t beat_bytes[PEER_BEATS]; /* reply_bytes when heartbeat n % PEER_BEATS went */
    uint64_t read_bytes;          /* reply bytes known read: at its last echoed beat */
    uint64_t probe_beat;          /* an extra heartbeat sent for unread replies; 0: none */
    int64_t probe_ms;             /* when it went */
    int dropped;                  /* out of every table, freed at end of turn */
    list_node_t dropped_link;
    int doomed;                   /* to be dropped once the message or pass in hand is
                                     done, in doomed_link (unread replies, a failed send) */
    const char *doom_reason;
    int doom_close;               /* ... closing its connection */
    list_node_t doomed_link;
} peer_t;

/*  Ends a session: its items go back, its joins go, its connection closes
    if `close_connection`. */
void broker_drop_peer(broker_t *self, peer_t *peer, const char *reason, int close_connection);

#endif

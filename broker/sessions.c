/*  A session's end: the items it holds go back, what it waited for is
    forgotten, its key's share is given back. Above the handlers that give
    items back (dispatch.c) and forget producers (producers.c), below those
    that end a session (commands.c: BYE, a HELLO that replaces it) and the
    server (heartbeats, revoked keys, a failed send: broker_doom_peer). */
#include "sessions.h"
#include "dispatch.h"
#include "producers.h"

#include <string.h>

void broker_drop_peer(broker_t *self, peer_t *peer, const char *reason, int close_connection)
{
    if (peer->dropped)
        return;
    peer->dropped = 1;
    if (peer->doomed)
        list_remove(&peer->doomed_link);
    if (self->config.verbose || peer->consumer.hold_count) {
        char name[AQ_NAME_MAX * 4 + 1];
        log_line("session %s closed (%s), %llu items returned to the queue",
                 log_escape(name, sizeof name, peer->client_id, strlen(peer->client_id)), reason,
                 (unsigned long long) peer->consumer.hold_count);
    }
    if (peer->consumer.queue) {
        queue_t *queue = peer->consumer.queue;
        broker_give_back_all(self, peer);
        queue_detach(queue, &peer->consumer);
        broker_release_joiners(self, queue); /* items may have been dead-lettered */
        broker_touch_queue(self, queue);
    }
    if (peer->producer)
        producers_detach(self, peer->producer);
    /* Nobody is left to answer. */
    list_node_t *node;
    while ((node = list_first(&peer->joins))) {
        joiner_t *joiner = list_entry(node, joiner_t, peer_link);
        queue_remove_joiner(joiner->queue, joiner);
        broker_free_joiner(self, joiner);
    }
    broker_peer_forgotten(self, peer);
    dict_delete(self->peers, peer->routing_id, peer->routing_id_size);
    if (dict_get(self->clients, peer->client_id, strlen(peer->client_id)) == peer)
        dict_delete(self->clients, peer->client_id, strlen(peer->client_id));
    if (close_connection)
        conns_close(self->conns, 0, peer->fd, peer->conn_stamp, broker_now_ms());
    list_push_back(&self->dropped_peers, &peer->dropped_link);
}


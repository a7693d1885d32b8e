/*  libasyncq, the C client of an asyncq broker: everything a program using
    the library includes. Link with `pkg-config --cflags --libs asyncq`.

    producer.h puts items and syncs them, consumer.h gets and acks them,
    control.h joins, asks for stats and shuts queues down, security.h sets
    CURVE keys; status.h names every outcome. session.h, codec.h and wire.h
    are the layers those are built on, for a client speaking the protocol
    (docs/PROTOCOL.md) itself. */
#ifndef ASYNCQ_ASYNCQ_H
#define ASYNCQ_ASYNCQ_H

#include "asyncq/codec.h"
#include "asyncq/consumer.h"
#include "asyncq/control.h"
#include "asyncq/endpoint.h"
#include "asyncq/producer.h"
#include "asyncq/security.h"
#include "asyncq/session.h"
#include "asyncq/status.h"
#include "asyncq/version.h"
#include "asyncq/wire.h"

#endif

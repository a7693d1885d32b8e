/*  libasyncq, the C client of an asyncq broker: everything a program using
    the library includes. Link with `pkg-config --cflags --libs asyncq`.

    producer.h puts items and syncs them, consumer.h gets and acks them,
    control.h joins, asks for stats and shuts queues down, on a session
    (session.h); security.h sets CURVE keys; status.h names every outcome;
    types.h holds the limits and modes; version.h the version. Nothing here
    includes ZeroMQ's or czmq's headers: the protocol's codec and the
    sockets are the library's own business.

    Conventions, the same in every call:
    - constructors take (address, name, queue..., options..., &status), and
      return NULL with status set on failure (aq_last_error() says why);
    - timeouts are `int timeout_ms`: -1 waits for ever, 0 does not wait;
    - a call returning AQ_REFUSED was answered by an ERROR from the broker:
      aq_session_error() has its code and reason. */
#ifndef ASYNCQ_ASYNCQ_H
#define ASYNCQ_ASYNCQ_H

#include "asyncq/consumer.h"
#include "asyncq/control.h"
#include "asyncq/producer.h"
#include "asyncq/security.h"
#include "asyncq/session.h"
#include "asyncq/status.h"
#include "asyncq/types.h"
#include "asyncq/version.h"

#endif

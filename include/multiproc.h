/**
 * @file multiproc.h
 * @brief Umbrella header: includes every multiproc module.
 *
 * | header                  | Python counterpart                                   |
 * |-------------------------|------------------------------------------------------|
 * | multiproc/error.h       | exceptions -> negative error codes                   |
 * | multiproc/value.h       | pickle -> MessagePack values                         |
 * | multiproc/subprocess.h  | subprocess                                           |
 * | multiproc/signals.h     | signal                                               |
 * | multiproc/process.h     | multiprocessing.Process, contexts, start methods     |
 * | multiproc/log.h         | multiprocessing.get_logger / log_to_stderr           |
 * | multiproc/info.h        | process information (psutil-like, from /proc)        |
 * | multiproc/connection.h  | multiprocessing.Pipe, connection.Listener/Client     |
 * | multiproc/queue.h       | multiprocessing.Queue, SimpleQueue, JoinableQueue    |
 * | multiproc/sync.h        | Lock, RLock, Semaphore, Event, Condition, Barrier    |
 * | multiproc/shared.h      | Value, Array, shared_memory, ShareableList           |
 * | multiproc/pool.h        | multiprocessing.Pool                                 |
 * | multiproc/manager.h     | multiprocessing.managers (Manager, proxies, servers) |
 * | multiproc/util.h        | multiprocessing.util (Finalize, register_after_fork) |
 */
#ifndef MULTIPROC_H
#define MULTIPROC_H

#include "multiproc/error.h"
#include "multiproc/value.h"
#include "multiproc/subprocess.h"
#include "multiproc/signals.h"
#include "multiproc/process.h"
#include "multiproc/log.h"
#include "multiproc/util.h"
#include "multiproc/info.h"
#include "multiproc/connection.h"
#include "multiproc/queue.h"
#include "multiproc/sync.h"
#include "multiproc/shared.h"
#include "multiproc/pool.h"
#include "multiproc/manager.h"

#endif

#ifndef JUNCTION_CZEROMQ_SHIM_H
#define JUNCTION_CZEROMQ_SHIM_H
#include <zmq.h>
#endif

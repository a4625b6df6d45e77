/**
 * @file multiproc.h
 * @brief Umbrella header: includes every multiproc module.
 */
#ifndef MULTIPROC_H
#define MULTIPROC_H

#include "multiproc/error.h"
#include "multiproc/value.h"
#include "multiproc/process.h"

#endif

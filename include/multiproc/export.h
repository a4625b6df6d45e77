/**
 * @file export.h
 * @brief Which symbols the shared library exports.
 *
 * The library is compiled with hidden visibility: only what a public header declares
 * between MP_API_BEGIN and MP_API_END is exported. Internal functions shared between the
 * library's files (`mp__*`) stay inside it. Each public header opens its declarations with
 * MP_API_BEGIN and closes them with MP_API_END.
 */
#ifndef MULTIPROC_EXPORT_H
#define MULTIPROC_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
/** Start of a header's public declarations: they are exported from libmultiproc.so. */
#define MP_API_BEGIN _Pragma("GCC visibility push(default)")
/** End of a header's public declarations. */
#define MP_API_END _Pragma("GCC visibility pop")
#else
#define MP_API_BEGIN
#define MP_API_END
#endif

#endif

/*
 * What every libFuzzer target of alyd shares: a private temporary directory
 * for the files the code under test insists on reading by path (the config
 * file, the pepper, OAuth key files, the LMDB environments), removed at exit.
 */
#ifndef ALY_FUZZ_H
#define ALY_FUZZ_H

#include <stddef.h>

/* The pepper every target writes, fixed so that seed cursors made by fuzz/make-corpus verify. */
#define FUZZ_PEPPER "alyd-fuzz-pepper-0123456789abcdef"

/* Creates the directory on first use; aborts when it cannot (a target without it tests nothing). */
const char *fuzz_tmpdir(void);

/* Writes tmpdir/name into buf and returns buf; aborts when it does not fit. */
const char *fuzz_path(const char *name, char *buf, size_t cap);

/* Replaces path with len bytes of data; aborts on an I/O error. */
void fuzz_write(const char *path, const void *data, size_t len);

#endif

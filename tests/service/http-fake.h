/* A deterministic fake of the daemon's Manager for the HTTP tests and the fuzzer: one model
 * "tiny" whose answer is the prompt's words echoed, one token per word, on each fake_pump(). */
#pragma once

#include "http-backend.h"

typedef struct Fake {
        GenRequest *live;               /* requests not yet finished */
        unsigned n_live, n_started, n_finished, n_cancelled;
        unsigned max_live;              /* more: -EBUSY; 0: no limit */
        unsigned n_loaded;              /* successful load_model calls */
        char precision[16];             /* last set_precision */
} Fake;

extern const HttpBackend fake_backend;

/* Emits one token for every live request, finishing those at their end; returns how many are
 * still live. */
unsigned fake_pump(Fake *f);
/* Ends every live request with reason (teardown). */
void fake_finish_all(Fake *f, const char *reason);

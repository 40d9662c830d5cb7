/* libcubby C API, for FFI users (Python SDK, other languages).
 *
 * Conventions: functions return 0 on success and -1 on a cubby error, in
 * which case *err (if err is not NULL) receives a malloc'd message the
 * caller frees with cubby_free(). Strings returned through out-parameters
 * are malloc'd too. A cubby_runtime is not thread-safe: use one per thread.
 */
#ifndef CUBBY_CUBBY_H
#define CUBBY_CUBBY_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cubby_runtime cubby_runtime;

/* Opens the runtime on home (NULL: $CUBBY_HOME or the default) and
 * reconciles the state store. bin_dir locates cubby-shim/cubby-agent
 * (NULL: $CUBBY_LIBEXEC, else next to the executable). */
int cubby_open(const char* home, const char* bin_dir, cubby_runtime** out, char** err);
void cubby_close(cubby_runtime* rt);

/* Creates and starts a detached box (like `cubby run -d`). argv may be NULL
 * (the image's command). *id_out receives the box id. */
int cubby_run_detached(cubby_runtime* rt, const char* image, const char* const* argv, char** id_out, char** err);

/* Runs argv in a running box, capturing stdout/stderr into malloc'd
 * buffers (either out-pointer may be NULL to discard). *exit_code gets the
 * process's code (128+N for signal N, 126/127 when it could not start). */
int cubby_exec(cubby_runtime* rt, const char* box, const char* const* argv, int* exit_code, char** out,
               char** errout, char** err);

int cubby_stop(cubby_runtime* rt, const char* box, int timeout_seconds, char** err);
/* Pauses (paused != 0) or unpauses a running box, its memory kept (as `cubby pause`). */
int cubby_pause(cubby_runtime* rt, const char* box, int paused, char** err);
int cubby_remove(cubby_runtime* rt, const char* box, int force, char** err);
/* The `cubby ls -a --format json` array. */
int cubby_list_json(cubby_runtime* rt, char** json_out, char** err);

void cubby_free(void* p);

#ifdef __cplusplus
}
#endif
#endif

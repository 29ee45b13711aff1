/* output_test.c - staged outputs: a set commits all or nothing, two names of one file are
 * refused, a killed writer or a reader that stops early leaves no temporary file, write errors
 * say why, and the zip writer's zip64 and deflate paths read back. */
#include "io_internal.h"
#include "io_testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

static int same_bytes(const char *path, const char *want)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char got[256];
    size_t n = fread(got, 1, sizeof got, f);
    fclose(f);
    return n == strlen(want) && memcmp(got, want, n) == 0;
}

static fr_tensor vec(double *x, int64_t n)
{
    fr_tensor t;
    memset(&t, 0, sizeof t);
    t.ndim = 1;
    t.shape[0] = n;
    t.data = x;
    return t;
}

/* run -o out.npy --report nodir/r.json used to replace out.npy, then fail. */
static void test_missing_directory_leaves_first_target(void)
{
    const char *a = tu_write("keep_a.npy", "old a", 5);
    int before = tu_count_files();
    char err[512];
    fr_outputs *o = fr_outputs_new();
    int ia, ib;
    int st = fr_outputs_add(o, a, FR_OUT_TENSOR, &ia, err, sizeof err);
    T_REQUIRE(st == 0, "%s", err);
    st = fr_outputs_add(o, tu_path("nodir/r.json"), FR_OUT_TEXT, &ib, err, sizeof err);
    T_CHECK(st == FR_ENOMEM && strstr(err, "nodir/r.json") && strstr(err, "No such file"),
            "missing directory: %d %s", st, err);
    fr_outputs_abort(o);
    T_CHECK(same_bytes(a, "old a"), "first target changed");
    T_CHECK(tu_count_files() == before, "temporary left: %d files, %d before", tu_count_files(),
            before);
}

/* The second output's writer fails after the first was written: nothing is replaced. */
static void test_failed_write_commits_nothing(void)
{
    const char *a = tu_write("fa.npy", "old a", 5), *b = tu_write("fb.json", "old b", 5);
    int before = tu_count_files();
    double good[2] = {1, 2}, bad[2] = {1, NAN};
    fr_tensor tg = vec(good, 2), tb = vec(bad, 2);
    char err[512];
    fr_outputs *o = fr_outputs_new();
    int ia, ib;
    T_REQUIRE(!fr_outputs_add(o, a, FR_OUT_TENSOR, &ia, err, sizeof err) &&
                  !fr_outputs_add(o, b, FR_OUT_TENSOR, &ib, err, sizeof err),
              "%s", err);
    int st = fr_outputs_write_tensor(o, ia, FR_FMT_UNKNOWN, &tg, FR_DTYPE_F8, err, sizeof err);
    T_CHECK(st == 0, "%s", err);
    st = fr_outputs_write_tensor(o, ib, FR_FMT_UNKNOWN, &tb, FR_DTYPE_F8, err, sizeof err);
    T_CHECK(st == FR_EINPUT && strstr(err, "NaN"), "%d %s", st, err);
    /* a caller that commits anyway gets an error, and still nothing is replaced */
    st = fr_outputs_commit(o, err, sizeof err);
    T_CHECK(st != 0, "commit after a failed write succeeded");
    T_CHECK(same_bytes(a, "old a") && same_bytes(b, "old b"), "a target changed");
    T_CHECK(tu_count_files() == before, "temporary left behind");
}

/* Both written: both replaced; an output staged but not written is left alone. */
static void test_commit_and_unwritten(void)
{
    const char *a = tu_write("ca.json", "old a", 5), *r = tu_write("cr.json", "old r", 5),
               *u = tu_write("cu.npy", "old u", 5);
    int before = tu_count_files();
    double x[3] = {0.1, -0.0, 5e-324};
    fr_tensor t = vec(x, 3);
    char err[512];
    fr_outputs *o = fr_outputs_new();
    int ia, ir, iu;
    T_REQUIRE(!fr_outputs_add(o, a, FR_OUT_TENSOR, &ia, err, sizeof err) &&
                  !fr_outputs_add(o, r, FR_OUT_TEXT, &ir, err, sizeof err) &&
                  !fr_outputs_add(o, u, FR_OUT_TENSOR, &iu, err, sizeof err),
              "%s", err);
    T_CHECK(!fr_outputs_write_tensor(o, ia, FR_FMT_UNKNOWN, &t, FR_DTYPE_F8, err, sizeof err), "%s",
            err);
    T_CHECK(!fr_outputs_write_text(o, ir, "{\"R\": 1}", err, sizeof err), "%s", err);
    int st = fr_outputs_write_text(o, ir, "again", err, sizeof err);
    T_CHECK(st == FR_EUSAGE && strstr(err, "twice"), "second write: %d %s", st, err);
    st = fr_outputs_add(o, tu_path("late.npy"), FR_OUT_TENSOR, NULL, err, sizeof err);
    T_CHECK(st == FR_EUSAGE && strstr(err, "stage every output first"), "late add: %d %s", st, err);
    st = fr_outputs_commit(o, err, sizeof err);
    T_CHECK(st == 0, "commit: %s", err);
    T_CHECK(same_bytes(a, "[0.1, -0.0, 5e-324]\n"), "tensor not written");
    T_CHECK(same_bytes(r, "{\"R\": 1}\n"), "report not written");
    T_CHECK(same_bytes(u, "old u"), "an unwritten output was replaced");
    T_CHECK(tu_count_files() == before, "temporary left behind");
}

static void test_same_file(void)
{
    tu_write("s.npy", "x", 1);
    mkdir(tu_path("sub"), 0755);
    char link[600], lnk_dir[600];
    snprintf(link, sizeof link, "%s", tu_path("s_link.npy"));
    symlink(tu_path("s.npy"), link);
    snprintf(lnk_dir, sizeof lnk_dir, "%s", tu_path("sub_link"));
    symlink(tu_path("sub"), lnk_dir);
    char a[700], b[700];
    T_CHECK(fr_same_file("-", "-"), "stdout twice");
    T_CHECK(!fr_same_file("-", tu_path("s.npy")), "stdout and a file");
    T_CHECK(fr_same_file("-", "/dev/stdout") && fr_same_file("/dev/stdout", "-"),
            "- and /dev/stdout");
    snprintf(a, sizeof a, "%s/./s.npy", tu_dir);
    T_CHECK(fr_same_file(a, tu_path("s.npy")), "./ spelling");
    T_CHECK(fr_same_file(link, tu_path("s.npy")), "a symlink to an existing file");
    /* new files: the directory is resolved, the name compared */
    snprintf(a, sizeof a, "%s/sub/../new.npy", tu_dir);
    T_CHECK(fr_same_file(a, tu_path("new.npy")), "new file through ..");
    snprintf(a, sizeof a, "%s/new.npy", lnk_dir);
    snprintf(b, sizeof b, "%s/sub/new.npy", tu_dir);
    T_CHECK(fr_same_file(a, b), "new file through a linked directory");
    T_CHECK(!fr_same_file(tu_path("new.npy"), tu_path("new2.npy")), "different new files");
    T_CHECK(!fr_same_file(tu_path("s.npy"), tu_path("new.npy")), "existing and new");

    char err[512];
    fr_outputs *o = fr_outputs_new();
    int before = tu_count_files();
    T_REQUIRE(!fr_outputs_add(o, tu_path("new.npy"), FR_OUT_TENSOR, NULL, err, sizeof err), "%s",
              err);
    snprintf(a, sizeof a, "%s/sub/../new.npy", tu_dir);
    int st = fr_outputs_add(o, a, FR_OUT_TEXT, NULL, err, sizeof err);
    T_CHECK(st == FR_EUSAGE && strstr(err, "name the same file"), "%d %s", st, err);
    st = fr_outputs_add(o, tu_path("x.txt"), FR_OUT_TENSOR, NULL, err, sizeof err);
    T_CHECK(st == FR_EUSAGE && strstr(err, "unknown output format"), "%d %s", st, err);
    fr_outputs_abort(o);
    T_CHECK(tu_count_files() == before, "temporary left behind");
    unlink(link);
    unlink(lnk_dir);
    rmdir(tu_path("sub"));
}

/* A device or pipe named as a path (--report /dev/stderr) is written into at commit, not
 * renamed over (which would replace the device node). */
static void test_device_target(void)
{
    int p[2];
    T_REQUIRE(pipe(p) == 0, "pipe");
    char dev[64];
    snprintf(dev, sizeof dev, "/proc/self/fd/%d", p[1]);
    const char *f = tu_write("dev_side.json", "old", 3);
    char err[512];
    fr_outputs *o = fr_outputs_new();
    int id, jf;
    T_REQUIRE(!fr_outputs_add(o, dev, FR_OUT_TEXT, &id, err, sizeof err) &&
                  !fr_outputs_add(o, f, FR_OUT_TEXT, &jf, err, sizeof err),
              "%s", err);
    T_CHECK(!fr_outputs_write_text(o, id, "{\"to\": \"the pipe\"}", err, sizeof err) &&
                !fr_outputs_write_text(o, jf, "[1]", err, sizeof err),
            "%s", err);
    int st = fr_outputs_commit(o, err, sizeof err);
    T_CHECK(st == 0, "commit: %s", err);
    close(p[1]);
    char got[64] = "";
    ssize_t n = read(p[0], got, sizeof got - 1);
    close(p[0]);
    T_CHECK(n == 19 && memcmp(got, "{\"to\": \"the pipe\"}\n", 19) == 0, "the pipe got %zd: %s", n,
            got);
    T_CHECK(same_bytes(f, "[1]\n"), "the file was not written");
}

/* A writer killed before its commit leaves no file: the temporary has no name yet. */
static void test_killed_leaves_nothing(void)
{
    int before = tu_count_files();
    pid_t pid = fork();
    if (pid == 0) {
        char err[512];
        static double x[1 << 16];
        fr_tensor t = vec(x, 1 << 16);
        fr_outputs *o = fr_outputs_new();
        int id;
        if (fr_outputs_add(o, tu_path("killed.npz"), FR_OUT_TENSOR, &id, err, sizeof err) ||
            fr_outputs_write_tensor(o, id, FR_FMT_UNKNOWN, &t, FR_DTYPE_F8, err, sizeof err))
            _exit(3);
        raise(SIGKILL);
        _exit(4);
    }
    int ws;
    waitpid(pid, &ws, 0);
    T_CHECK(WIFSIGNALED(ws), "child did not die: %d", ws);
    T_CHECK(tu_count_files() == before, "%d files left, %d before", tu_count_files(), before);
}

/* stdout into a pipe whose reader reads 10 bytes and leaves: an EPIPE error (not death by
 * SIGPIPE), and no temporary in $TMPDIR or next to the file output. */
static void pipe_reader_stops(int with_file, int compress)
{
    char tmpdir[700];
    snprintf(tmpdir, sizeof tmpdir, "%s/private_tmp", tu_dir);
    mkdir(tmpdir, 0700);
    int before = tu_count_files();
    int fds[2];
    T_REQUIRE(pipe(fds) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 1);
        close(fds[1]);
        setenv("TMPDIR", tmpdir, 1);
        static double x[1 << 18]; /* 2 MB: far more than a pipe holds */
        for (int i = 0; i < 1 << 18; i++)
            x[i] = i * 0.37;
        fr_tensor t = vec(x, 1 << 18);
        char *names[2] = {"q", "k"};
        fr_tensor ts[2] = {t, t};
        fr_bundle b = {2, names, ts, 0};
        char err[512];
        fr_outputs *o = fr_outputs_new();
        int is, ifl = -1;
        int st = fr_outputs_add(o, "-", FR_OUT_BUNDLE, &is, err, sizeof err);
        if (!st && with_file)
            st = fr_outputs_add(o, tu_path("side.npy"), FR_OUT_TENSOR, &ifl, err, sizeof err);
        if (!st)
            st = fr_outputs_write_bundle(o, is, FR_FMT_UNKNOWN, &b, FR_DTYPE_F8, compress, err,
                                         sizeof err);
        if (!st && with_file)
            st = fr_outputs_write_tensor(o, ifl, FR_FMT_UNKNOWN, &t, FR_DTYPE_F8, err, sizeof err);
        if (!st)
            st = fr_outputs_commit(o, err, sizeof err);
        else
            fr_outputs_abort(o);
        _exit(st == FR_ENOMEM && strstr(err, "Broken pipe") ? 0 : 10 + st);
    }
    close(fds[1]);
    char buf[10];
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t r = read(fds[0], buf + got, sizeof buf - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fds[0]);
    int ws;
    waitpid(pid, &ws, 0);
    T_CHECK(got == 10 && memcmp(buf, "PK\x03\x04", 4) == 0, "not a zip on stdout");
    T_CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
            "with_file %d: child %s %d (0: an EPIPE error reported)", with_file,
            WIFSIGNALED(ws) ? "killed by signal" : "exited",
            WIFSIGNALED(ws) ? WTERMSIG(ws) : WEXITSTATUS(ws));
    T_CHECK(tu_count_files() == before, "with_file %d: a file left next to the output", with_file);
    DIR *d = opendir(tmpdir);
    int left = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        left += e->d_name[0] != '.' || (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."));
    if (d) closedir(d);
    T_CHECK(left == 0, "with_file %d: %d files left in $TMPDIR", with_file, left);
    rmdir(tmpdir);
}

static void test_reader_stops_early(void)
{
    pipe_reader_stops(0, 0); /* streamed straight into stdout */
    pipe_reader_stops(1, 0); /* staged in $TMPDIR, copied at commit */
    pipe_reader_stops(1, 1);
}

/* A write that fails says why (the .npy writer used to say only "write error"). */
static void test_write_error_reason(void)
{
    static double x[1 << 14];
    fr_tensor t = vec(x, 1 << 14);
    char err[512] = "";
    pid_t pid = fork();
    if (pid == 0) { /* a file size limit: EFBIG past 4 kB */
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        int st =
            fr_write_tensor(tu_path("big.npy"), FR_FMT_UNKNOWN, &t, FR_DTYPE_F8, err, sizeof err);
        _exit(st == FR_ENOMEM && strstr(err, "write error: File too large") ? 0 : 1);
    }
    int ws;
    waitpid(pid, &ws, 0);
    T_CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "npy past RLIMIT_FSIZE: no reason given");
    T_CHECK(access(tu_path("big.npy"), F_OK) != 0, "partial file committed");
    for (int fmt = 0; fmt < 3; fmt++) {
        pid = fork();
        if (pid == 0) { /* a full disk */
            int fd = open("/dev/full", O_WRONLY);
            if (fd < 0) _exit(2);
            dup2(fd, 1);
            fr_format f = fmt == 0 ? FR_FMT_NPY : fmt == 1 ? FR_FMT_NPZ : FR_FMT_JSON;
            int st = fr_write_tensor("-", f, &t, FR_DTYPE_F8, err, sizeof err);
            _exit(st == FR_ENOMEM && strstr(err, "<stdout>: write error: No space left on device")
                      ? 0
                      : 1);
        }
        waitpid(pid, &ws, 0);
        T_CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "format %d to /dev/full: no reason", fmt);
    }
}

/* The zip64 records (forced on small members) and deflate read back through libzip. */
static void test_zip64_and_deflate(void)
{
    double x[100], y[7];
    for (int i = 0; i < 100; i++)
        x[i] = i / 7.0;
    for (int i = 0; i < 7; i++)
        y[i] = -i;
    fr_tensor ts[2] = {vec(x, 100), vec(y, 7)};
    char *names[2] = {"x", "y"};
    fr_bundle b = {2, names, ts, 0};
    for (int mode = 0; mode < 4; mode++) {
        const char *p = tu_path("z64.npz");
        FILE *f = fopen(p, "wb");
        T_REQUIRE(f, "open");
        io_w w = {f, p, p, 0, 0, 0, {{{0}}}};
        io_zip z;
        io_zip_init(&z, &w, mode & 1);
        char err[512];
        int st = FR_OK;
        for (int i = 0; i < 2 && !st; i++) {
            io_npy_gen g;
            io_npy_gen_init(&g, &ts[i], FR_DTYPE_F8);
            io_producer pr = {io_npy_gen_next, io_npy_gen_rewind, &g};
            char nm[16];
            snprintf(nm, sizeof nm, "%s.npy", names[i]);
            st = io_zip_member(&z, nm, mode >> 1, io_npy_gen_size(&g), &pr, err, sizeof err);
        }
        if (!st) st = io_zip_finish(&z, err, sizeof err);
        io_zip_free(&z);
        fclose(f);
        T_REQUIRE(st == 0, "mode %d: %s", mode, err);
        fr_bundle r;
        st = fr_read(p, &r, NULL, err, sizeof err);
        T_CHECK(st == 0, "mode %d (zip64 %d, deflate %d): %s", mode, mode & 1, mode >> 1, err);
        if (!st)
            T_CHECK(r.count == 2 && !strcmp(r.names[0], "x") && !strcmp(r.names[1], "y") &&
                        tu_same_bits(r.tensors[0].data, x, 100) &&
                        tu_same_bits(r.tensors[1].data, y, 7),
                    "mode %d: read back differs", mode);
        fr_bundle_free(&r);
        (void)b;
    }
}

int main(void)
{
    tu_init();
    T_RUN(test_missing_directory_leaves_first_target);
    T_RUN(test_failed_write_commits_nothing);
    T_RUN(test_commit_and_unwritten);
    T_RUN(test_same_file);
    T_RUN(test_device_target);
    T_RUN(test_killed_leaves_nothing);
    T_RUN(test_reader_stops_early);
    T_RUN(test_write_error_reason);
    T_RUN(test_zip64_and_deflate);
    return t_done();
}

/* err.c: hy_err messages and dtype names shared by every layer. */
#include <stdarg.h>
#include <stdio.h>
#include "kernels/backend.h"

int hy_err_set(hy_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

size_t hy_dtype_size(hy_dtype dt)
{
    return dt == HY_DT_F32 ? 4 : 2;
}

const char *hy_dtype_name(hy_dtype dt)
{
    switch (dt) {
    case HY_DT_F32: return "F32";
    case HY_DT_F16: return "F16";
    case HY_DT_BF16: return "BF16";
    }
    return "?";
}

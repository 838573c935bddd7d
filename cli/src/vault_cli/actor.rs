//! Who is running the command, for audit rows: the operating-system account of the process's
//! real uid, looked up in the password database (`getpwuid_r`). Never `$USER` or `$LOGNAME`,
//! which anyone can set (and which are often unset under cron, systemd and containers).

/// The account name of the process's real uid, or `uid:<n>` when the password database has
/// no entry for it (a container's arbitrary uid, say).
pub fn os_account() -> String {
    #[cfg(unix)]
    {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        account_name(uid).unwrap_or_else(|| format!("uid:{uid}"))
    }
    #[cfg(not(unix))]
    {
        "unknown".to_string()
    }
}

/// The password database's name for `uid`, if it has an entry.
#[cfg(unix)]
fn account_name(uid: libc::uid_t) -> Option<String> {
    use std::ffi::CStr;

    let mut size = 1024usize;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: an all-zero `passwd` is a valid value (null pointers, zero ids); it is only
        // read after getpwuid_r filled it in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `pwd` and `result` are live locals, and
        // `buf` is a live buffer of `buf.len()` bytes that the returned strings point into.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: getpwuid_r succeeded, so `pw_name` points to a NUL-terminated string inside
        // `buf`, which is still alive here.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned();
        return (!name.is_empty()).then_some(name);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_account_comes_from_the_uid_not_the_environment() {
        let a = os_account();
        assert!(!a.is_empty());
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        if uid == 0 {
            assert_eq!(a, "root");
        }
        assert_eq!(account_name(u32::MAX - 7), None, "no entry for an unused uid");
    }
}

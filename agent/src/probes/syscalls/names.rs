//! Human names for syscall numbers and errnos. Unknown numbers stay numbers:
//! nothing is dropped for lacking a name.

use super::{errno_table, syscall_table};
use std::borrow::Cow;

/// x86_64 syscall name, or the number itself when it has no name.
pub(crate) fn syscall(id: u32) -> Cow<'static, str> {
    match syscall_table::NAMES.binary_search_by_key(&id, |&(n, _)| n) {
        Ok(i) => Cow::Borrowed(syscall_table::NAMES[i].1),
        Err(_) => Cow::Owned((id as i32).to_string()),
    }
}

/// errno name such as `EBADF`, or the number when the kernel headers have none.
pub(crate) fn errno(errno: u16) -> Cow<'static, str> {
    match errno_table::NAMES.binary_search_by_key(&errno, |&(n, _)| n) {
        Ok(i) => Cow::Borrowed(errno_table::NAMES[i].1),
        Err(_) => Cow::Owned(errno.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_unique() {
        assert!(syscall_table::NAMES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(errno_table::NAMES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn known_syscalls() {
        assert_eq!(syscall(0), "read");
        assert_eq!(syscall(39), "getpid");
        assert_eq!(syscall(110), "getppid");
        assert_eq!(syscall(81), "fchdir");
        assert_eq!(syscall(231), "exit_group");
        assert_eq!(syscall(435), "clone3");
        assert_eq!(syscall(462), "mseal");
    }

    #[test]
    fn unknown_syscalls_stay_numbers() {
        assert_eq!(syscall(9999), "9999");
        assert_eq!(syscall(u32::MAX), "-1"); // syscall(-1) reaches sys_exit as id -1
    }

    #[test]
    fn errnos() {
        assert_eq!(errno(1), "EPERM");
        assert_eq!(errno(9), "EBADF");
        assert_eq!(errno(11), "EAGAIN"); // not its alias EWOULDBLOCK
        assert_eq!(errno(110), "ETIMEDOUT");
        assert_eq!(errno(111), "ECONNREFUSED");
        assert_eq!(errno(512), "ERESTARTSYS");
        assert_eq!(errno(4000), "4000");
    }
}

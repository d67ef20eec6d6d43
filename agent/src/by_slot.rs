//! Per-container aggregates: one value per container label set (`k8s::Slot`;
//! slot 0 is the host, and everything when attribution is off). Every probe
//! that labels by container keeps its aggregate in one of these.

use crate::k8s::Slot;

/// One aggregate per container label set (`k8s::Slot`; slot 0 is the host,
/// and everything when attribution is off). An entry whose slot was retired
/// and reused is replaced on its next event.
#[derive(Debug)]
pub struct BySlot<T> {
    items: Vec<Option<(u32, T)>>,
}

impl<T> Default for BySlot<T> {
    fn default() -> Self {
        BySlot { items: Vec::new() }
    }
}

impl<T> BySlot<T> {
    /// The entry of `slot`, made with `make` if absent or of an older generation.
    #[inline]
    pub fn entry(&mut self, slot: Slot, make: impl FnOnce() -> T) -> &mut T {
        let i = slot.index as usize;
        if i >= self.items.len() {
            self.items.resize_with(i + 1, || None);
        }
        let item = &mut self.items[i];
        if item.as_ref().is_none_or(|(g, _)| *g != slot.generation) {
            *item = Some((slot.generation, make()));
        }
        &mut item.as_mut().expect("just filled").1
    }

    /// The host's entry (everything, when attribution is off).
    pub fn host(&self) -> Option<&T> {
        self.get(Slot::HOST)
    }

    pub fn get(&self, slot: Slot) -> Option<&T> {
        match self.items.get(slot.index as usize)? {
            Some((g, t)) if *g == slot.generation => Some(t),
            _ => None,
        }
    }

    /// Every entry, for changes that apply to all.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.items.iter_mut().flatten().map(|(_, t)| t)
    }

    /// Every entry with its slot, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &T)> {
        self.items.iter().enumerate().filter_map(|(i, item)| {
            let (generation, t) = item.as_ref()?;
            Some((
                Slot {
                    index: i as u32,
                    generation: *generation,
                },
                t,
            ))
        })
    }
}

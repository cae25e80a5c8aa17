namespace Isr.Vmm;

namespace Isr.BlockDevice;
